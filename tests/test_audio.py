import io

import numpy as np
import pytest
import soundfile as sf

from asd_core.audio import AudioDecodeError, decode, encode_wav


def _tone(sr, seconds=1.5, f=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def test_16k_wav_round_trip():
    x = _tone(16000)
    y = decode(encode_wav(x, 16000))
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < 1e-3  # PCM16 quantisation


def test_44k1_is_resampled_to_16k_keeping_the_tone():
    y = decode(encode_wav(_tone(44100, 2.0, 1000.0), 44100))
    assert abs(y.shape[0] - 32000) <= 1
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 16000 / y.shape[0] - 1000.0) < 2.0


def test_stereo_is_mixed_down():
    left, right = _tone(16000), np.zeros(24000, np.float32)
    y = decode(encode_wav(np.stack([left, right], axis=1), 16000))
    assert y.ndim == 1
    np.testing.assert_allclose(y, left / 2, atol=1e-3)


def test_flac():
    x = _tone(16000)
    y = decode(encode_wav(x, 16000, fmt="FLAC"))
    assert np.max(np.abs(y - x)) < 1e-3


def _nan_wav():
    buf = io.BytesIO()
    x = _tone(16000)
    x[100] = np.nan
    sf.write(buf, x, 16000, subtype="FLOAT", format="WAV")
    return buf.getvalue()


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: b"", "empty"),
        (lambda: encode_wav(_tone(16000))[:30], "unreadable"),  # header cut
        (lambda: encode_wav(_tone(16000))[:-5000], "unreadable"),  # data cut
        (lambda: b"this is not audio at all" * 100, "unreadable"),
        (_nan_wav, "non_finite"),
        (lambda: encode_wav(_tone(16000, 0.2)), "too_short"),
    ],
)
def test_bad_input_gives_typed_error(make, reason):
    with pytest.raises(AudioDecodeError) as e:
        decode(make(), 16000, min_seconds=1.0)
    assert e.value.reason == reason
    assert reason in str(e.value)
