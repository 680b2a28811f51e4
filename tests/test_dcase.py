import pytest

from asd_core.dcase import ClipName, ClipNameError, build_name, parse_name, parse_path

REAL_NAMES = [
    ("fan", "section_00_source_train_normal_0040_m-n_X.wav"),
    ("gearbox", "section_00_target_test_anomaly_0040_volt_1.5_wt_130.wav"),
    ("slider", "section_00_target_test_normal_0013_vel_620_ac_0.08.wav"),
    ("ToyCar", "section_00_source_test_normal_0028_car_C2_spd_34V_mic_1.wav"),
    ("valve", "section_00_target_test_anomaly_0044_pat_03.wav"),
    ("bandsaw", "section_00_0000.wav"),
    ("Vacuum", "section_01_0123.flac"),
]


@pytest.mark.parametrize("machine, name", REAL_NAMES)
def test_round_trip(machine, name):
    clip = parse_name(name, machine)
    assert build_name(clip) == name
    assert parse_path(f"s3://bucket/root/{machine}/{clip.split}/{name}") == clip


def test_fields_of_labelled_name():
    c = parse_name("section_00_target_test_anomaly_0040_volt_1.5_wt_130.wav", "gearbox")
    assert (c.section, c.domain, c.split, c.label, c.index) == ("00", "target", "test", "anomaly", 40)
    assert c.attributes == "volt_1.5_wt_130"
    assert c.attribute_pairs == (("volt", "1.5"), ("wt", "130"))
    assert c.is_anomaly is True


def test_evaluation_name_has_unknown_label():
    c = parse_name("section_00_0007.wav", "grinder")
    assert c.label is None and c.domain is None and c.is_anomaly is None and c.split == "test"


def test_odd_attribute_suffix_is_kept_raw():
    c = parse_name("section_00_source_train_normal_0001_m-n_X_extra.wav", "fan")
    assert c.attributes == "m-n_X_extra" and c.attribute_pairs == ()


@pytest.mark.parametrize(
    "name",
    [
        "section_0_source_train_normal_0000.wav",
        "section_00_source_train_broken_0000.wav",
        "section_00_left_train_normal_0000.wav",
        "section_00_source_train_normal_000.wav",
        "section_00_source_train_normal_0000.mp3",
        "153012.flac",
        "",
    ],
)
def test_bad_names_rejected_with_file_name(name):
    with pytest.raises(ClipNameError) as e:
        parse_name(name, "fan")
    assert repr(name) in str(e.value)


def test_path_split_folder_must_agree():
    with pytest.raises(ClipNameError, match="folder says"):
        parse_path("root/fan/test/section_00_source_train_normal_0000.wav")
    with pytest.raises(ClipNameError, match="neither"):
        parse_path("root/fan/eval/section_00_0000.wav")


def test_build_validates_fields():
    with pytest.raises(ClipNameError):
        ClipName("fan", "00", 1, split="test", domain="source", label=None)
    with pytest.raises(ClipNameError):
        ClipName("fan", "0", 1)
    assert ClipName("fan", "00", 3, "train", "source", "normal", "a_1").relpath() == (
        "fan/train/section_00_source_train_normal_0003_a_1.wav"
    )
