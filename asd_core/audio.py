"""Audio decoding: WAV/FLAC bytes -> mono float32 at the model's sample rate."""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf


class AudioDecodeError(ValueError):
    """A clip that cannot be turned into usable audio; ``reason`` says why.

    Reasons: ``empty``, ``unreadable`` (not audio, truncated header, unknown
    format), ``non_finite`` (NaN/Inf samples), ``too_short``, ``too_long`` (longer
    than the caller's limit, refused before decoding), ``silent`` (digital silence:
    peak below :data:`SILENCE_PEAK`).
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# Peak (full scale = 1) below which a clip is digital silence: under half a 16-bit LSB
# (3.05e-5), so a zeroed recorder output is caught while 1-LSB dither is still audio.
# Silence has no spectrum to reconstruct: its log-mel is the floor everywhere and
# scores hundreds of times a normal clip.
SILENCE_PEAK = 1e-5


def decode(
    data: bytes, sample_rate: int = 16000, min_seconds: float = 0.0, max_seconds: float | None = None
) -> np.ndarray:
    """Decode WAV/FLAC ``data`` to mono float32 samples at ``sample_rate``.

    Stereo and multi-channel audio is averaged to mono; other rates are resampled
    with torchaudio (band-limited sinc). Returns ``[T]`` float32 in [-1, 1].
    Raises :class:`AudioDecodeError` for anything that is not usable audio. A clip
    longer than ``max_seconds`` is refused from its header, before its samples are
    decoded (formats that do not say their length: after decoding).
    """
    return decode_with_rate(data, sample_rate, min_seconds, max_seconds)[0]


def decode_with_rate(
    data: bytes, sample_rate: int = 16000, min_seconds: float = 0.0, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """:func:`decode`, also returning the file's own sample rate (Hz)."""
    if not data:
        raise AudioDecodeError("empty", "0 bytes")
    missing = _wav_missing_bytes(data)
    if missing:
        raise AudioDecodeError("unreadable", f"truncated WAV: data chunk is {missing} bytes short")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate = f.samplerate
            frames = f.frames
            if max_seconds and rate > 0 and 0 < frames and frames / rate > max_seconds:
                raise AudioDecodeError("too_long", f"{frames / rate:.1f} s ({f.channels} channels at {rate} Hz) > "
                                       f"{max_seconds:g} s; raise the limit (--max-clip-seconds) to score it")
            x = f.read(dtype="float32", always_2d=True)  # [T, C]
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioDecodeError("unreadable", str(e) or type(e).__name__) from e
    if x.shape[0] == 0:
        raise AudioDecodeError("empty", "no samples")
    if frames > 0 and x.shape[0] < frames:  # header promises more than the file holds
        raise AudioDecodeError("unreadable", f"truncated: {x.shape[0]} of {frames} frames")
    if not np.isfinite(x).all():
        raise AudioDecodeError("non_finite", "NaN or Inf samples")
    mono = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        raise AudioDecodeError("silent", f"peak {peak:.2e} of full scale: digital silence")
    if rate != sample_rate:
        mono = resample(mono, rate, sample_rate)
    seconds = mono.shape[0] / sample_rate
    if seconds < min_seconds:
        raise AudioDecodeError("too_short", f"{seconds:.3f} s < {min_seconds:.3f} s")
    if max_seconds and seconds > max_seconds:
        raise AudioDecodeError("too_long", f"{seconds:.1f} s > {max_seconds:g} s")
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


# A clip's level is the median of its frames' AC level, so a click in silence or a DC
# offset reads as the silence it is. A dead or unplugged microphone (1-LSB dither, a
# bias voltage, hum pickup) sits tens of dB below every recording of a running machine.
LEVEL_FRAME = 1024  # samples (64 ms at 16 kHz)
LOW_LEVEL_MARGIN_DB = 20.0  # below the quietest training clip: a sensor fault, not the machine


def clip_level_db(wav: np.ndarray, frame: int = LEVEL_FRAME) -> float:
    """Median over ``frame``-sample frames of the frame's RMS after removing its mean,
    in dB re full scale (``[T]`` float samples in [-1, 1]; about -101 dB for digital
    silence)."""
    n = max(1, wav.shape[0] // frame)
    x = np.asarray(wav[: n * frame] if wav.shape[0] >= frame else wav, dtype=np.float64).reshape(n, -1)
    power = ((x - x.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)
    return float(10.0 * np.log10(np.median(power) + 1e-10))


def level_reference(levels: list[float]) -> dict[str, float]:
    """What an artifact stores of its training clips' levels (dB): ``min``, ``median``."""
    return {"min": float(np.min(levels)), "median": float(np.median(levels))}


def low_level(level_db: float, reference: dict[str, float] | None) -> str | None:
    """Why a clip at ``level_db`` is a sensor fault against the type's ``reference``
    (:func:`level_reference`), or None."""
    if not reference or level_db >= reference["min"] - LOW_LEVEL_MARGIN_DB:
        return None
    return (f"level {level_db:.0f} dB, {reference['min'] - level_db:.0f} dB below the quietest training clip "
            f"({reference['min']:.0f} dB): microphone dead, unplugged or muted?")


def _wav_missing_bytes(data: bytes) -> int:
    """How many bytes a RIFF/WAVE file's ``data`` chunk declares beyond the end of
    ``data`` (0 when complete or not a WAV). libsndfile silently reads what is there,
    so a cut-off upload would otherwise pass as a shorter clip."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if cid == b"data":
            if size in (0, 0xFFFFFFFF):  # streamed WAV: size unknown
                return 0
            return max(0, size - (len(data) - pos - 8))
        pos += 8 + size + (size & 1)
    return 0


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample ``[T]`` float32 from ``orig_rate`` to ``new_rate`` Hz (torchaudio)."""
    import torch
    import torchaudio.functional as AF

    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), orig_rate, new_rate)
    return y.numpy()


def encode_wav(x: np.ndarray, sample_rate: int = 16000, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    """Encode ``[T]`` or ``[T, C]`` float samples as WAV/FLAC bytes."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(x), sample_rate, subtype=subtype, format=fmt)
    return buf.getvalue()
