"""The U-Net of the report's Table 3.

::

    (1,64,64)  ConvIn    2x conv3x3                    -> (w,64,64)
    (w,64,64)  DownBlock 4x [2x conv-BN-ReLU, maxpool] -> (8w,4,4)   (512,4,4) at w=64
    (8w,4,4)   UpBlock   4x [upsample x2, concat skip, 2x conv-BN-ReLU] -> (w,64,64)
    (w,64,64)  ConvOut   2x conv3x3 with LeakyReLU      -> (1,64,64)

Encoder widths w, 2w, 4w, 8w, 8w. Each UpBlock halves the concatenated channels in
its first conv and again in its second (1024 -> 512 -> 256 at the bottom), the
common bilinear-U-Net layout: 17.3 M parameters at w = 64.
"""

from __future__ import annotations

import torch
from torch import nn

from ...stages import ModelConfig


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class DownBlock(nn.Module):
    """``[B, c_in, H, W]`` -> 2x conv-BN-ReLU -> maxpool -> ``[B, c_out, H/2, W/2]``."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.convs = nn.Sequential(*_conv_bn_relu(c_in, c_out), *_conv_bn_relu(c_out, c_out))
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.convs(x))


class UpBlock(nn.Module):
    """Upsample ``[B, c_in, H, W]`` x2, concat skip ``[B, c_skip, 2H, 2W]``, 2 convs -> ``c_out``."""

    def __init__(self, c_in: int, c_skip: int, c_out: int):
        super().__init__()
        c_cat = c_in + c_skip
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.convs = nn.Sequential(*_conv_bn_relu(c_cat, c_cat // 2), *_conv_bn_relu(c_cat // 2, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """Masked-spectrogram inpainting U-Net. ``[B, 1, 64, 64]`` -> ``[B, 1, 64, 64]``."""

    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        w = cfg.width
        enc = [w, 2 * w, 4 * w, 8 * w, 8 * w]
        self.conv_in = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True)
        )
        self.downs = nn.ModuleList(DownBlock(enc[i], enc[i + 1]) for i in range(4))
        # Skips: down blocks 3, 2, 1 give (8w,8,8), (4w,16,16), (2w,32,32); ConvIn (w,64,64).
        self.ups = nn.ModuleList(
            [
                UpBlock(enc[4], enc[3], enc[3] // 2),  # 512+512 -> 256 at 8x8 (w=64)
                UpBlock(enc[3] // 2, enc[2], enc[2] // 2),  # 256+256 -> 128 at 16x16
                UpBlock(enc[2] // 2, enc[1], enc[1] // 2),  # 128+128 -> 64 at 32x32
                UpBlock(enc[1] // 2, enc[0], w),  # 64+64 -> 64 at 64x64
            ]
        )
        self.conv_out = nn.Sequential(
            nn.Conv2d(w, w, 3, padding=1),
            nn.LeakyReLU(cfg.leaky_slope, inplace=True),
            nn.Conv2d(w, 1, 3, padding=1),
        )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps of ``x [B, 1, 64, 64]``: ConvIn ``(w, 64, 64)``,
        then each DownBlock ``(2w, 32, 32)`` ... ``(8w, 4, 4)``."""
        h = self.conv_in(x)  # (B, w, 64, 64)
        feats = [h]
        for down in self.downs:
            h = down(h)
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        h = skips[-1]
        # skips: (w,64) (2w,32) (4w,16) (8w,8) and the bottom (8w,4,4) = h
        for up, skip in zip(self.ups, reversed(skips[:4]), strict=True):
            h = up(h, skip)  # (4w,8) (2w,16) (w,32) (w,64)
        return self.conv_out(h)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
