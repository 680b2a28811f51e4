import pytest

from asd_core.config import ASDConfig, cpu_cost, cpu_warning, override_keys, parse_overrides, preset
from asd_core.synth import ARCHIVE_SIZES, describe_size
from jobs.cli import COMMANDS, main


def test_presets():
    r, t = preset("report"), preset("tiny")
    assert (r.model.width, r.train.epochs, r.train.lr, r.train.batch_size, r.score.n_masks) == (64, 100, 1e-4, 64, 256)
    assert (r.masks.patch, r.masks.n_masked, r.features.n_mels, r.features.tile_frames) == (8, 48, 64, 64)
    assert t.model.width < r.model.width
    with pytest.raises(KeyError):
        preset("huge")


def test_override_by_name_with_types():
    cfg = preset("tiny").override(parse_overrides(["epochs=3", "lr=3e-4", "train.loss_mode=full"]))
    assert cfg.train.epochs == 3 and cfg.train.lr == pytest.approx(3e-4) and cfg.train.loss_mode == "full"
    assert preset("tiny").train.epochs != 3  # frozen: the preset is untouched
    with pytest.raises(KeyError, match="unknown"):
        cfg.override({"epoch": "3"})
    with pytest.raises(ValueError, match="epochs"):
        cfg.override({"epochs": "three"})
    with pytest.raises(ValueError):
        parse_overrides(["epochs"])


def test_config_json_round_trip():
    cfg = preset("tiny").override({"n_masks": 8})
    assert ASDConfig.from_dict(cfg.to_dict()) == cfg


def test_cli_help_and_version(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("synth", "train", "score", "report", "demo", "version"):
        assert cmd in out
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("asd 0.")
    assert main(["frobnicate"]) == 2


def _help(cmd: str, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c != "version"])
def test_every_command_help_shows_defaults_and_no_rst(cmd, capsys):
    text = _help(cmd, capsys)
    assert "`" not in text and "::" not in text
    assert "(default:" in text


def test_help_names_the_defaults_and_every_set_key(capsys):
    train = _help("train", capsys)
    assert "--workers-per-model WORKERS_PER_MODEL data-parallel workers per machine type (default: 1)" in train
    assert "(default: 0.0)" in train and "(default: default)" in train  # --gpus-per-worker, --preset
    listed = train.split("Keys: ", 1)[1].split(" --workers-per-model", 1)[0].split(", ")
    assert listed == override_keys() and "epochs" in listed and "n_masks" in listed
    assert "--actors ACTORS scoring actors (default: 1)" in _help("score", capsys)
    assert "(default: small)" in _help("demo", capsys) and "(default: full)" in _help("synth", capsys)


def test_set_without_a_value_is_one_clear_line(tmp_path, capsys):
    assert main(["train", str(tmp_path), str(tmp_path), "--set", "epochs"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "asd train: --set epochs: expected KEY=VALUE, e.g. --set epochs=3"
    assert main(["train", str(tmp_path), str(tmp_path), "--set", "epoch=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown config field 'epoch'; did you mean epochs" in err
    assert main(["sweep", str(tmp_path), str(tmp_path), "--machines", "fan", "--set", "lr"]) == 2
    assert capsys.readouterr().err.strip() == "asd sweep: --set lr: expected KEY=VALUE, e.g. --set epochs=3"


def test_a_large_unet_on_cpu_warns_before_anything_starts(tmp_path, capsys):
    """The width-64 presets (100 epochs) without GPUs: a warning with the cost and
    --preset default; `default` itself is CPU-sized. The bad run name then stops the
    command before Ray starts."""
    args = ["train", str(tmp_path), str(tmp_path), "--run-name", "no spaces allowed"]
    for big in ("wide", "report"):
        assert main([*args, "--preset", big]) == 2
        err = capsys.readouterr().err
        assert "asd train: warning:" in err and "core-hours" in err and "--preset default" in err, big
    for extra in ([], ["--preset", "tiny"], ["--preset", "wide", "--gpus-per-worker", "1"],
                  ["--preset", "wide", "--model", "knn"], ["--set", "width=16"]):
        assert main(args + extra) == 2
        assert "warning" not in capsys.readouterr().err, extra
    cost = cpu_cost(preset("default"))
    assert cost is not None and 0.3 < cost["train_core_hours"] < 1.0  # per type of 1,000 clips (README: ~50 min)
    big = cpu_warning(preset("wide"), 0, cuda_available=True)
    assert big is not None and "has a GPU, but --gpus-per-worker is 0" in big
    assert cpu_warning(preset("report").override({"width": "16", "epochs": "5"}), 0, False) is None


def test_small_is_the_same_archive_in_synth_and_demo(tmp_path, capsys):
    from jobs.demo import SIZES

    assert SIZES is ARCHIVE_SIZES
    small = ARCHIVE_SIZES["small"]
    assert main(["synth", str(tmp_path), "--small", "--machines", "fan", "--seconds", "1.5", "--quiet"]) == 0
    assert len(list((tmp_path / "fan" / "train").glob("*.wav"))) == small["train_source"] + small["train_target"]
    assert len(list((tmp_path / "fan" / "test").glob("*.wav"))) == 4 * small["test"]
    assert describe_size("small") in _help("demo", capsys) and describe_size("small") in _help("synth", capsys)
