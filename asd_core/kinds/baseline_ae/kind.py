"""The official DCASE 2023 Task 2 autoencoder baseline as a model kind
(network, features and scores: :mod:`.network`). ``ae.ae_score`` picks
``mahalanobis`` (default) or ``mse``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...metrics import gamma_threshold
from ..base import ClipRows, Config, Fitted, Prepared, epoch_generator, register_kind, threshold_clip_indices
from .config import BaselineAEConfig
from .network import BaselineAE, ae_scores, frame_vectors, residual_cov_inv

SCORES = ("mahalanobis", "mse")


class _AEDetector:
    def __init__(self, model: BaselineAE, cov_inv: torch.Tensor, cfg: Config):
        self.model, self.cov_inv, self.cfg = model, cov_inv, cfg
        self.which = SCORES.index(cfg.ae.ae_score) if cfg.ae.ae_score in SCORES else None
        if self.which is None:
            raise ValueError(f"ae.ae_score must be one of {SCORES}, got {cfg.ae.ae_score!r}")

    def score(self, clips: Sequence[torch.Tensor], vectors=None) -> np.ndarray:
        # ae_scores returns (mse, mahalanobis)
        return np.array([ae_scores(self.model, self.cov_inv, c.float(), self.cfg.ae)[1 - self.which] for c in clips])


@register_kind
@dataclass(frozen=True)
class BaselineAEKind:
    name: str = "baseline-ae"
    config_stage: ClassVar[tuple[str, type] | None] = ("ae", BaselineAEConfig)

    def item_shape(self, cfg: Config) -> tuple[int, ...]:
        return (cfg.ae.ae_n_mels * cfg.ae.ae_frames,)

    def clip_rows(self, wav: np.ndarray, cfg: Config) -> ClipRows:
        v = frame_vectors(wav, cfg.ae)
        return ClipRows(v, v)

    def assemble(self, clips: list[ClipRows], domains: list[str | None], cfg: Config) -> Prepared:
        rows = [c.train for c in clips if c.train.shape[0]]
        if not rows:
            raise ValueError("no training frame vectors")
        data = torch.cat(rows).numpy()
        return Prepared(data, [c.score for c in clips], list(domains), {}, int(data.shape[0]))

    def epochs(self, cfg: Config) -> int:
        return cfg.ae.ae_epochs

    def build(self, cfg: Config) -> nn.Module:
        return BaselineAE(cfg.ae)

    def optimizer(self, model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=cfg.ae.ae_lr)

    def train_epoch(self, model, data, opt, epoch, cfg, *, device="cpu", rank=0, world_size=1) -> float:
        """Shuffled frame vectors; each rank takes its slice of every global batch."""
        model.train()
        g = epoch_generator(cfg.train.seed, epoch)
        order = torch.randperm(data.shape[0], generator=g)
        bs = cfg.ae.ae_batch_size
        total, steps = 0.0, 0
        for start in range(0, data.shape[0], bs):
            idx = order[start : start + bs]
            share = math.ceil(len(idx) / world_size)
            part = idx[rank * share : (rank + 1) * share]
            weight = 1.0
            if len(part) < 2:  # BatchNorm needs two rows; keep DDP in lockstep with a zero loss
                part, weight = idx[:2] if len(idx) >= 2 else order[:2], 0.0
            b = data[part].to(device, torch.float32)
            loss = ((model(b) - b) ** 2).mean() * weight
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + float(loss.detach()), steps + 1
        return total / max(steps, 1)

    def finalize(self, model: nn.Module | None, prep: Prepared, cfg: Config) -> Fitted:
        assert model is not None
        model = model.cpu().eval()
        covs = []
        for dom in ("source", "target"):
            sel = [c for c, d in zip(prep.score_rows, prep.domains, strict=True) if (d == dom) or
                   (dom == "source" and d is None)]
            covs.append(residual_cov_inv(model, sel, cfg.ae) if sel else None)
        covs = [c if c is not None else (covs[0] if covs[0] is not None else covs[1]) for c in covs]
        cov_inv = torch.stack(covs)
        state = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
        state["cov_inv"] = cov_inv
        idx = threshold_clip_indices(len(prep.score_rows), cfg)
        det = _AEDetector(model, cov_inv, cfg)
        scores = det.score([prep.score_rows[i] for i in idx])
        scores = scores[np.isfinite(scores)]
        return Fitted(state, {}, gamma_threshold(scores, cfg.score.threshold_quantile), scores)

    def featurize(self, wav: np.ndarray, cfg: Config, extras: dict[str, Any]) -> torch.Tensor:
        return frame_vectors(wav, cfg.ae)

    def clip_vector(self, wav: np.ndarray, cfg: Config) -> None:
        return None

    def load(self, state, extras, cfg, device, n_masks=None) -> _AEDetector:
        model = BaselineAE(cfg.ae)
        model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        return _AEDetector(model.eval(), state["cov_inv"], cfg)


KIND = BaselineAEKind()
