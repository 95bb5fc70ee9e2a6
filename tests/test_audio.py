"""The wav-folder reader: file-name fields, PCM reading, pad/crop, log-mel features."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from cotrain.data import DatasetNotFoundError, load_dataset
from cotrain.data.audio import encode_field, fit_length, log_mel, mel_filterbank, pattern_regex, read_wav

RATE = 8000


def _write_wav(path: Path, samples: np.ndarray, rate: int = RATE, channels: int = 1) -> None:
    pcm = np.clip(samples * 32767, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _tone(freq: float, seconds: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t)


@pytest.fixture()
def wav_dir(tmp_path: Path) -> Path:
    d = tmp_path / "fsdd"
    d.mkdir()
    for digit in range(3):
        for speaker in ("jackson", "nicolas"):
            for index in range(5):
                length = 0.4 + 0.1 * index  # some shorter, some longer than 0.6 s
                _write_wav(d / f"{digit}_{speaker}_{index}.wav", _tone(300 + 900 * digit, length))
    _write_wav(d / "notes.wav", _tone(100, 0.1))  # does not match the pattern
    return d


def test_pattern_and_fields() -> None:
    m = pattern_regex("{digit}_{speaker}_{index}.wav").fullmatch("7_george_12.wav")
    assert m is not None and m.groupdict() == {"digit": "7", "speaker": "george", "index": "12"}
    assert pattern_regex("{a}-{b}.wav").fullmatch("x_y.wav") is None
    codes, names = encode_field(["b", "a", "c", "a"])
    assert codes.tolist() == [1, 0, 2, 0] and names == ["a", "b", "c"]
    codes, names = encode_field(["3", "10", "0"])
    assert codes.tolist() == [3, 10, 0] and names is None
    with pytest.raises(ValueError, match="twice"):
        pattern_regex("{a}_{a}.wav")


def test_read_wav_and_fit(tmp_path: Path) -> None:
    stereo = np.stack([_tone(440, 0.05), np.zeros(400)], axis=1).reshape(-1)
    _write_wav(tmp_path / "s.wav", stereo, channels=2)
    samples, rate = read_wav(tmp_path / "s.wav")
    assert rate == RATE and samples.dtype == np.float32 and len(samples) == 400
    assert np.allclose(samples, _tone(440, 0.05) / 2, atol=1e-3)
    assert len(fit_length(samples, 100)) == 100
    padded = fit_length(samples, 500)
    assert len(padded) == 500 and np.all(padded[400:] == 0)


def test_mel_filterbank_and_log_mel() -> None:
    fb = mel_filterbank(RATE, 512, 40)
    assert tuple(fb.shape) == (40, 257) and float(fb.max()) <= 1.0
    assert (fb.sum(dim=1) > 0).all()  # no empty filter
    centres = fb.argmax(dim=1)
    assert torch.all(centres[1:] >= centres[:-1])
    waves = torch.from_numpy(np.stack([_tone(300, 0.5), _tone(3000, 0.5)]).astype(np.float32))
    feats = log_mel(waves, RATE, n_mels=40, n_fft=512, hop_length=128)
    assert tuple(feats.shape) == (2, 1, 40, 1 + 4000 // 128)
    peak = feats[:, 0].mean(dim=-1).argmax(dim=-1)
    assert peak[0] < peak[1]  # the higher tone lights up a higher mel band


def test_wav_folder(wav_dir: Path) -> None:
    s = load_dataset("wav", path=wav_dir, seconds=0.6, n_mels=32)
    n = len(s.train) + len(s.test)
    assert n == 30 and len(s.test) == 6
    assert s.train.x.dtype == torch.float32 and tuple(s.train.x.shape[1:]) == (1, 32, 1 + 4800 // 128)
    assert torch.isfinite(s.train.x).all()
    assert s.train.y.dtype == torch.int64 and s.train.num_classes == 3
    assert set(s.train.attributes) == {"speaker", "index"}
    assert s.train.attribute_values == {"speaker": ["jackson", "nicolas"]}
    assert set(s.train.attributes["index"].tolist()) <= set(range(5))
    # the digit's tone frequency is visible: mean mel band of peak energy rises with the digit
    full_x, full_y = torch.cat([s.train.x, s.test.x]), torch.cat([s.train.y, s.test.y])
    peaks = [full_x[full_y == d, 0].mean(dim=(0, 2)).argmax().item() for d in range(3)]
    assert peaks[0] < peaks[1] < peaks[2]
    by_speaker = load_dataset("wav", path=wav_dir, label="speaker", seconds=0.6)
    assert by_speaker.train.class_names == ["jackson", "nicolas"]
    assert set(by_speaker.train.attributes) == {"digit", "index"}


def test_wav_errors(wav_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs path"):
        load_dataset("wav")
    with pytest.raises(DatasetNotFoundError, match="missing_folder"):
        load_dataset("wav", path=tmp_path / "missing_folder")
    with pytest.raises(ValueError, match="not a field"):
        load_dataset("wav", path=wav_dir, label="word")
    _write_wav(wav_dir / "1_other_9.wav", _tone(300, 0.2), rate=16000)
    with pytest.raises(ValueError, match="sample rate 16000"):
        load_dataset("wav", path=wav_dir)
