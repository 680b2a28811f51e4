import numpy as np
import pytest
import torch

from asd_core.config import FeatureConfig, MaskConfig
from asd_core.features import (
    ENVELOPE_BANDS,
    ENVELOPE_EDGES_HZ,
    Normalizer,
    clip_tiles,
    envelope_spectrum,
    log_mel,
    tile,
)
from asd_core.kinds.unet.masks import RandomMaskSource, random_masks

from .signals import harmonic_tone

CFG = FeatureConfig()


def test_ten_second_clip_gives_nine_64x64_tiles():
    wav = harmonic_tone(np.random.default_rng(0), seconds=10.0)
    spec = log_mel(wav, CFG)
    assert spec.shape == (64, 1 + 160000 // 256)  # centred frames
    tiles = clip_tiles(wav, CFG)
    assert tiles.shape == (9, 64, 64)
    assert clip_tiles(wav, CFG, train=True).shape == (18, 64, 64)  # hop 32 for training
    torch.testing.assert_close(tiles[1], spec[:, 64:128])


def test_short_clip_gives_no_tiles():
    assert tile(torch.zeros(64, 40), 64, 64).shape == (0, 64, 64)


def test_log_mel_batch_consistency():
    rng = np.random.default_rng(1)
    batch = np.stack([harmonic_tone(rng, 2.0), 0.001 * harmonic_tone(rng, 2.0)])
    together = log_mel(batch, CFG)
    for i in range(2):
        torch.testing.assert_close(together[i], log_mel(batch[i], CFG), rtol=1e-4, atol=1e-3)


def test_envelope_spectrum_finds_the_modulation_rate_at_any_level():
    """Noise amplitude-modulated at 25 Hz in the 500-2000 Hz band only: that band's
    envelope spectrum peaks in the bin holding 25 Hz, the 50-500 Hz band's does not;
    10x the level changes nothing; a 1.2-s clip (shorter than one Welch segment) still
    gives a finite vector of the same length."""
    rng = np.random.default_rng(0)
    sr, n = 16000, 16000 * 6
    t = np.arange(n) / sr
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    mid = np.fft.irfft(np.where((f > 700) & (f < 1800), spec, 0), n)
    low = np.fft.irfft(np.where((f > 100) & (f < 400), spec, 0), n)
    wav = mid * (1 + 0.8 * np.sin(2 * np.pi * 25 * t)) + low + 0.01 * rng.standard_normal(n)  # + the mic's floor
    got = envelope_spectrum(wav, sr).reshape(len(ENVELOPE_BANDS), -1)
    want = int(np.searchsorted(ENVELOPE_EDGES_HZ, 25.0)) - 1
    assert int(got[1].argmax()) == want and int(got[0].argmax()) != want
    assert got[1, want] - np.median(got[1]) > 3.0  # far above the noise's own envelope
    np.testing.assert_allclose(envelope_spectrum(10 * wav, sr), got.ravel(), atol=1e-6)
    short = envelope_spectrum(wav[: int(1.2 * sr)], sr)
    assert short.shape == got.ravel().shape and np.isfinite(short).all()


def test_normalizer_standardises_each_band():
    rng = np.random.default_rng(2)
    tiles = torch.cat([clip_tiles(harmonic_tone(rng, 3.0), CFG) for _ in range(4)])
    norm = Normalizer.fit(tiles)
    z = norm(tiles)
    per_band = z.permute(1, 0, 2).reshape(64, -1)
    torch.testing.assert_close(per_band.mean(1), torch.zeros(64), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_band.std(1), torch.ones(64), atol=1e-3, rtol=0)
    assert Normalizer.from_dict(norm.to_dict()).mean.tolist() == norm.mean.tolist()
    with pytest.raises(ValueError):
        Normalizer.fit(torch.zeros(0, 64, 64))


def test_masks_exact_count_and_patch_alignment():
    cfg = MaskConfig()
    m = random_masks(50, 64, 64, cfg, torch.Generator().manual_seed(0))
    assert m.shape == (50, 64, 64) and m.dtype == torch.bool
    assert (m.sum((1, 2)) == 48 * 64).all()
    patches = m.view(50, 8, 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(50, 8, 8, 64)
    # every 8x8 patch is all-masked or all-visible
    assert ((patches.sum(-1) == 0) | (patches.sum(-1) == 64)).all()
    assert (patches.all(-1).flatten(1).sum(1) == 48).all()


def test_masks_reproducible_by_seed_and_fresh_otherwise():
    cfg = MaskConfig()
    a = random_masks(8, 64, 64, cfg, torch.Generator().manual_seed(3))
    b = random_masks(8, 64, 64, cfg, torch.Generator().manual_seed(3))
    c = random_masks(8, 64, 64, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])
    src = RandomMaskSource(16, cfg, seed=7)
    assert torch.equal(src.masks(64, 64), src.masks(64, 64))


def test_mask_config_errors():
    with pytest.raises(ValueError):
        random_masks(1, 64, 60, MaskConfig(), torch.Generator())
    with pytest.raises(ValueError):
        random_masks(1, 64, 64, MaskConfig(n_masked=65), torch.Generator())


def test_balanced_masks_every_cycle_new_and_even():
    """8 balanced masks: two cycles with different patch orders, each hiding every patch
    3 times, together 6 times; the first cycle is the 4-mask set."""
    from asd_core.config import MaskConfig
    from asd_core.kinds.unet.masks import BalancedMaskSource

    m = BalancedMaskSource(8, MaskConfig(), 3).masks(64, 64)
    patches = m[:, ::8, ::8].reshape(8, 64).int()
    assert (patches.sum(1) == 48).all()
    assert (patches[:4].sum(0) == 3).all() and (patches.sum(0) == 6).all()
    assert not (patches[:4] == patches[4:]).all()
    assert (BalancedMaskSource(4, MaskConfig(), 3).masks(64, 64) == m[:4]).all()
