import numpy as np
import pytest
import torch

from asd_core.config import MaskConfig, ModelConfig, preset
from asd_core.kinds import get_kind
from asd_core.kinds.unet.masks import random_masks
from asd_core.kinds.unet.network import UNet, count_parameters
from asd_core.kinds.unet.scoring import per_clip_mean, score_tiles
from asd_core.kinds.unet.training import reconstruction_loss


def score_clips(model, clips, masks, forward_batch=256):
    """The ``mse`` rule's clip scores: every clip's tiles scored together, averaged back per clip."""
    counts = [int(t.shape[0]) for t in clips]
    return per_clip_mean(score_tiles(model, torch.cat(clips), masks, forward_batch=forward_batch).numpy(), counts)


def test_report_unet_shape_and_size():
    model = UNet(preset("report").model).eval()
    n = count_parameters(model)
    assert 16.5e6 < n < 17.5e6, n  # 17.3 M at width 64
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 1, 64, 64)
    # the bottleneck is (512, 4, 4)
    h = model.conv_in(torch.zeros(1, 1, 64, 64))
    for down in model.downs:
        h = down(h)
    assert h.shape == (1, 512, 4, 4)


def test_unknown_model_kind_rejected():
    with pytest.raises(ValueError):
        get_kind("transformer")


def test_masked_loss_ignores_visible_pixels():
    target = torch.zeros(1, 4, 4)
    recon = torch.zeros(1, 4, 4)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2] = True
    recon[0, 2:] = 5.0  # error only where visible
    assert reconstruction_loss(recon, target, mask, "masked") == 0
    assert reconstruction_loss(recon, target, mask, "full") == pytest.approx(12.5)
    with pytest.raises(ValueError):
        reconstruction_loss(recon, target, mask, "other")


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return UNet(ModelConfig(width=4)).eval()


def test_scores_do_not_depend_on_batch_mates(small_model):
    g = torch.Generator().manual_seed(0)
    masks = random_masks(6, 64, 64, MaskConfig(), g)
    clips = [torch.randn(n, 64, 64, generator=g) for n in (3, 1, 5)]
    together = score_clips(small_model, clips, masks, forward_batch=7)
    alone = [score_clips(small_model, [c], masks, forward_batch=64)[0] for c in clips]
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    # and equal the definition, computed pair by pair
    x, m = clips[1][0], masks
    with torch.no_grad():
        recon = small_model(x.masked_fill(m, 0.0)[:, None])[:, 0]
    expected = (((recon - x) ** 2) * m).sum((1, 2)) / m.sum((1, 2))
    assert alone[1] == pytest.approx(float(expected.mean()), rel=1e-5)


def test_score_tiles_deterministic_and_empty(small_model):
    masks = random_masks(4, 64, 64, MaskConfig(), torch.Generator().manual_seed(1))
    t = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(score_tiles(small_model, t, masks), score_tiles(small_model, t, masks))
    assert score_tiles(small_model, t[:0], masks).shape == (0,)
    assert np.isnan(score_clips(small_model, [t[:0]], masks)[0])
