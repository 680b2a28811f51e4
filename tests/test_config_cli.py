import pytest

from asd_core.config import ASDConfig, parse_overrides, preset
from jobs.cli import main


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
