"""The U-Net kind: masked-spectrogram inpainting (the technical report's method).

Feature rows are normalised 64x64 log-mel tiles. ``score.rule`` picks how a clip's
reconstruction turns into its anomaly score:

- ``mse``: the report's mean masked MSE over K masks, then over the clip's tiles;
- ``knn_err``: the clip's *error profile*, the log reconstruction error per mel band
  (its mean and its max over the clip's tiles, and its spread over time), against the
  training clips' profiles: the distance to the nearest training clips of each domain
  (:class:`asd_core.neighbours.DomainBanks`), the smallest over domains. A band the
  model always fills badly (noise) no longer dominates the score, and the few
  target-domain clips are neighbours of their own. The README's study measures it
  against ``mse`` and the references;
- ``knn_enc``: the same with the U-Net encoder's own features of the unmasked tiles
  (per level, channels x bands, mean and std over time, averaged over tiles);
- ``knn_err_stats``: both views of a clip, its error profile and its
  log-mel statistics (per band mean and std over the clip's tiles), joined after
  standardisation in one set of per-domain banks. The clip statistics carry what the
  reconstruction error misses (a level or spectral shift the model fills in well: fan);
  chosen on 5 of the 7 synthetic types and confirmed on the other 2 (README);
- ``knn_err_stats_mod``: the same with a third view, the clip's *modulation
  spectrum* read off its tiles (:func:`modulation_spectra`): how fast each half of the
  bands swells and fades, 1 to 31 Hz. Shaft-rate amplitude modulation (an imbalanced
  fan, a worn gear, a loose part) is invisible in band means and in a well-filled
  reconstruction;
- ``knn_err_stats_env`` (the default): the third view is the waveform's *envelope
  spectrum* instead (:func:`asd_core.features.envelope_spectrum`: 4 carrier bands,
  2 to 400 Hz), the envelope analysis of vibration diagnostics, which also sees
  modulation faster than the tiles' frames. It is the kind's :meth:`clip_vector`,
  carried from the decode stage beside the tiles. Both chosen on the same 5 types
  with nothing tuned but the band groups of ``mod``, confirmed on the other 2 (README).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ...features import ENVELOPE_SIZE, Normalizer, clip_tiles, envelope_spectrum, fit_normalizer
from ...metrics import gamma_threshold
from ...neighbours import DomainBanks
from ...runtime import autocast, prepare_input, prepare_model
from ..base import ClipRows, Config, Fitted, Prepared, cap_rows, domain_repeats, register_kind, threshold_clip_indices
from .masks import mask_source
from .network import UNet
from .scoring import per_clip_mean, score_tiles
from .training import train_epoch

RULES = ("mse", "knn_err", "knn_enc", "knn_err_stats", "knn_err_stats_mod", "knn_err_stats_env")
# The clip view each neighbour rule's banks hold.
RULE_VIEW = {"knn_err": "knn_err", "knn_enc": "knn_enc", "knn_err_stats": "knn_err+stats",
             "knn_err_stats_mod": "knn_err+stats+mod", "knn_err_stats_env": "knn_err+stats+env"}
ERROR_RULES = ("knn_err", "knn_err_stats", "knn_err_stats_mod", "knn_err_stats_env")  # read the error maps
# Band groups of the modulation spectrum: the lower and the upper half of the mel range
# (2, 4, 8 and 16 groups measured on the 5 chosen types: 0.867, 0.867, 0.865, 0.864).
MOD_GROUPS = 2
log = logging.getLogger(__name__)


def scoring_masks(cfg: Config, n_masks: int | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    """The fixed K scoring masks ``[K, n_mels, tile_frames]`` (bool) of a config."""
    src = mask_source(cfg.score.mask_schedule, n_masks or cfg.score.n_masks, cfg.masks, cfg.score.mask_seed)
    return src.masks(cfg.features.n_mels, cfg.features.tile_frames, device)


@torch.inference_mode()
def encoder_features(model: UNet, tiles: torch.Tensor, cfg: Config, batch: int = 256) -> torch.Tensor:
    """``[N, H, W]`` normalised tiles -> ``[N, D]``: per encoder level, channels x bands,
    mean and std over time."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, tiles.shape[0], batch):
        x = prepare_input(tiles[start : start + batch, None].to(device), cfg.model.channels_last)
        with autocast(device, cfg.model.precision):
            feats = model.encode(x)
        parts = []
        for f in feats:
            f = f.float()
            parts += [f.mean(-1).flatten(1), f.std(-1).flatten(1)]
        out.append(torch.cat(parts, 1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def clip_views(
    model: UNet, clips: Sequence[torch.Tensor], masks: torch.Tensor, cfg: Config,
    vectors: Sequence[np.ndarray | None] | None = None,
) -> dict[str, np.ndarray]:
    """Per clip what ``score.rule`` reads: ``mse`` ``[C]`` the report score,
    ``knn_err`` ``[C, 3H]`` error profiles (:func:`error_profiles`), ``knn_enc``
    ``[C, D]`` encoder features, ``knn_err+stats`` the profile joined with the tile
    statistics ``[C, 2H]`` (and ``knn_err+stats+mod`` with the modulation spectra,
    ``knn_err+stats+env`` with the clips' ``vectors``, their envelope spectra: NaN for
    a clip without one)."""
    counts = [int(t.shape[0]) for t in clips]
    allt = torch.cat(list(clips)) if clips else torch.zeros(0, cfg.features.n_mels, cfg.features.tile_frames)
    rule = cfg.score.rule
    if rule == "knn_enc":  # the unmasked tiles only: no reconstruction needed
        return {rule: per_clip_mean(encoder_features(model, allt, cfg).numpy(), counts)}
    kw = dict(forward_batch=cfg.score.forward_batch, fill=cfg.masks.fill, precision=cfg.model.precision,
              channels_last=cfg.model.channels_last)
    if rule in ERROR_RULES:
        _, maps = score_tiles(model, allt, masks, error_maps=True, **kw)
        err = error_profiles(maps, counts)
        both = np.concatenate([err, tile_statistics(clips)], 1)
        views = {"knn_err": err, "knn_err+stats": both}
        if rule == "knn_err_stats_mod":
            views["knn_err+stats+mod"] = np.concatenate([both, modulation_spectra(clips)], 1)
        if rule == "knn_err_stats_env":
            views["knn_err+stats+env"] = np.concatenate([both, _stack_vectors(vectors, len(counts))], 1)
        return views
    return {"mse": per_clip_mean(score_tiles(model, allt, masks, **kw).numpy(), counts)}


def _stack_vectors(vectors: Sequence[np.ndarray | None] | None, n: int) -> np.ndarray:
    """``[n, D]`` of the clips' envelope spectra (NaN rows where a clip has none)."""
    vectors = list(vectors) if vectors is not None else [None] * n
    if len(vectors) != n:
        raise ValueError(f"{len(vectors)} clip vectors for {n} clips")
    return np.stack([np.full(ENVELOPE_SIZE, np.nan) if v is None else
                     np.asarray(v, dtype=np.float64).reshape(ENVELOPE_SIZE) for v in vectors]) if n else \
        np.zeros((0, ENVELOPE_SIZE))


def error_profiles(maps: torch.Tensor, counts: Sequence[int]) -> np.ndarray:
    """Error maps ``[N, H, W]`` of the clips' tiles (``counts`` per clip) -> ``[C, 3H]``:
    per band the log of the error's mean and max over the clip's tiles and of its
    spread over time (NaN rows for clips without tiles)."""
    band = maps.mean(-1)  # [N, H] error per band, averaged over time
    spread = maps.std(-1)  # [N, H] its spread over time (short events)
    prof, off = [], 0
    for c in counts:
        b, sp = band[off : off + c], spread[off : off + c]
        off += c
        prof.append(torch.cat([b.mean(0), b.max(0).values, sp.mean(0)]).clamp_min(1e-8).log() if c else
                    torch.full((3 * band.shape[1],), float("nan")))
    return torch.stack(prof).numpy() if prof else np.zeros((0, 3 * maps.shape[1]))


def tile_statistics(clips: Sequence[torch.Tensor]) -> np.ndarray:
    """Per clip ``[n, H, W]`` normalised tiles -> ``[C, 2H]``: each band's mean and std
    over all the clip's frames (NaN rows for clips without tiles)."""
    out = []
    for t in clips:
        if t.shape[0] == 0:
            out.append(np.full(2 * t.shape[1], np.nan))
            continue
        bands = t.float().permute(1, 0, 2).reshape(t.shape[1], -1)  # [H, n * W]
        out.append(torch.cat([bands.mean(1), bands.std(1, correction=0)]).numpy())
    return np.stack(out) if out else np.zeros((0, 0))


def modulation_spectra(clips: Sequence[torch.Tensor], groups: int = MOD_GROUPS) -> np.ndarray:
    """Per clip ``[n, H, W]`` tiles -> ``[C, groups * W // 2]``: the log power of each
    band's fluctuation over the tile's frames (Hann window, mean removed, DC dropped:
    W // 2 modulation frequencies, 1 to 31 Hz at 64 frames of 16 ms), averaged over
    the bands of each of ``groups`` adjacent groups and over the clip's tiles (NaN
    rows for clips without tiles). A band's offset changes nothing; its scale (the
    normaliser's) weighs it in its group."""
    out = []
    for t in clips:
        h, w = int(t.shape[1]), int(t.shape[2])
        g = min(groups, h)
        if t.shape[0] == 0:
            out.append(np.full(g * (w // 2), np.nan))
            continue
        x = t.double()
        x = (x - x.mean(-1, keepdim=True)) * torch.hann_window(w, periodic=False, dtype=x.dtype)
        power = torch.fft.rfft(x, dim=-1).abs().square()[..., 1 : w // 2 + 1].mean(0)  # [H, W // 2]
        parts = [p.mean(0) for p in torch.tensor_split(power, g, dim=0)]
        out.append(torch.log(torch.stack(parts) + 1e-8).flatten().numpy())
    return np.stack(out) if out else np.zeros((0, 0))


class _UNetDetector:
    def __init__(self, model: UNet, cfg: Config, bank: DomainBanks | None, masks: torch.Tensor):
        self.model, self.cfg, self.bank, self.masks = model, cfg, bank, masks

    def score(self, clips: Sequence[torch.Tensor], vectors: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
        if not clips:
            return np.zeros(0)
        views = clip_views(self.model, clips, self.masks, self.cfg, vectors)
        rule = self.cfg.score.rule
        if rule == "mse":
            return views["mse"]
        feats = views[RULE_VIEW[rule]]
        out = np.full(len(clips), np.nan)
        ok = np.isfinite(feats).all(1)
        if ok.any():
            out[ok] = self.bank.score(feats[ok])
        return out


@register_kind
@dataclass(frozen=True)
class UNetKind:
    name: str = "unet"
    config_stage: ClassVar[tuple[str, type] | None] = None  # the shared stages are the U-Net's

    def item_shape(self, cfg: Config) -> tuple[int, ...]:
        return (cfg.features.n_mels, cfg.features.tile_frames)

    def clip_rows(self, wav: np.ndarray, cfg: Config) -> ClipRows:
        return ClipRows(clip_tiles(wav, cfg.features, train=True), clip_tiles(wav, cfg.features, train=False),
                        self.clip_vector(wav, cfg))

    def assemble(self, clips: list[ClipRows], domains: list[str | None], cfg: Config) -> Prepared:
        clips_doms = [(c, d) for c, d in zip(clips, domains, strict=True) if c.train.shape[0] > 0]
        if not clips_doms:
            raise ValueError("no training tiles: no clip is long enough for one tile")
        clips, domains = [c for c, _ in clips_doms], [d for _, d in clips_doms]
        repeats = domain_repeats(domains, cfg.train.target_share)
        normalizer = fit_normalizer([c.train for c, r in zip(clips, repeats, strict=True) for _ in range(r)])
        fc = cfg.features
        n_total = sum(c.train.shape[0] * r for c, r in zip(clips, repeats, strict=True))
        out = np.empty((n_total, fc.n_mels, fc.tile_frames), dtype=np.float16)
        pos = 0
        for c, r in zip(clips, repeats, strict=True):
            z = normalizer(c.train).numpy().astype(np.float16)
            for _ in range(r):
                out[pos : pos + z.shape[0]] = z
                pos += z.shape[0]
        tiles = cap_rows(torch.from_numpy(out), cfg.train.max_train_tiles, cfg.train.seed).numpy()
        return Prepared(
            np.ascontiguousarray(tiles),
            [normalizer(c.score) for c in clips],
            domains,
            {"normalizer": normalizer.to_dict()},
            n_total,
            [c.vector for c in clips],
        )

    def epochs(self, cfg: Config) -> int:
        return cfg.train.epochs

    def build(self, cfg: Config) -> nn.Module:
        return UNet(cfg.model)

    def optimizer(self, model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=cfg.train.lr)

    def train_epoch(self, model, data, opt, epoch, cfg, *, device="cpu", rank=0, world_size=1) -> float:
        return train_epoch(
            model, data, opt, epoch, cfg.train, cfg.masks, device=device, rank=rank, world_size=world_size,
            precision=cfg.model.precision, channels_last=cfg.model.channels_last,
        )

    def finalize(self, model: nn.Module | None, prep: Prepared, cfg: Config) -> Fitted:
        assert model is not None
        model = prepare_model(model.cpu().eval(), cfg.model.channels_last)
        state = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        masks = scoring_masks(cfg)
        rule = cfg.score.rule
        if rule not in RULES:
            raise ValueError(f"score.rule must be one of {RULES}, got {rule!r}")
        extras = dict(prep.extras)
        if rule == "mse":
            idx = threshold_clip_indices(len(prep.score_rows), cfg)
            scores = clip_views(model, [prep.score_rows[i] for i in idx], masks, cfg)["mse"]
        else:
            # Every training clip goes into its domain's bank; each is scored without itself.
            feats = clip_views(model, prep.score_rows, masks, cfg, prep.score_vectors)[RULE_VIEW[rule]]
            ok = np.isfinite(feats).all(1)
            doms = [d for d, good in zip(prep.domains, ok, strict=True) if good]
            bank = DomainBanks.fit(feats[ok], doms, k=cfg.score.rule_k)
            state.update(bank.state_dict("bank."))
            scores = bank.score(feats[ok], self_domain=bank.domain)
        scores = scores[np.isfinite(scores)]
        return Fitted(state, extras, gamma_threshold(scores, cfg.score.threshold_quantile), scores)

    def featurize(self, wav: np.ndarray, cfg: Config, extras: dict[str, Any]) -> torch.Tensor:
        return Normalizer.from_dict(extras["normalizer"])(clip_tiles(wav, cfg.features, train=False))

    def clip_vector(self, wav: np.ndarray, cfg: Config) -> np.ndarray | None:
        return envelope_spectrum(wav, cfg.features.sample_rate) if cfg.score.rule == "knn_err_stats_env" else None

    def load(self, state, extras, cfg, device, n_masks=None) -> _UNetDetector:
        model = UNet(cfg.model)
        model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        model = prepare_model(model.to(device).eval(), cfg.model.channels_last)
        if cfg.score.rule not in RULES:
            raise ValueError(f"score.rule must be one of {RULES}, got {cfg.score.rule!r}")
        bank = DomainBanks.from_state(state, "bank.") if "bank.bank" in state else None
        if cfg.score.rule != "mse":
            if bank is None:
                raise ValueError(f"artifact has no neighbour bank for score.rule {cfg.score.rule!r}")
            if n_masks and n_masks != cfg.score.n_masks:
                # The bank holds the training clips' profiles under the artifact's own
                # masks; profiles under other masks would not be comparable with them.
                log.warning("score.rule %s: scoring with the artifact's %d masks, not %d",
                            cfg.score.rule, cfg.score.n_masks, n_masks)
            n_masks = cfg.score.n_masks
        return _UNetDetector(model, cfg, bank, scoring_masks(cfg, n_masks, device))


KIND = UNetKind()
