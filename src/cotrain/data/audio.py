"""A folder of ``.wav`` files -> log-mel spectrograms, labels and attributes from file names.

Example: the Free Spoken Digit Dataset names its files ``{digit}_{speaker}_{index}.wav``;
``load_dataset("wav", path=folder)`` gives x (N, 1, n_mels, frames), y = digit, attributes
speaker and index. Only the stdlib ``wave`` module, numpy and torch are used.
"""

from __future__ import annotations

import logging
import math
import re
import wave
from pathlib import Path

import numpy as np
import torch

from cotrain.data.base import DatasetSplits
from cotrain.data.readers.common import make_splits, stratified_split
from cotrain.data.registry import not_found, register_dataset

log = logging.getLogger(__name__)

DEFAULT_PATTERN = "{digit}_{speaker}_{index}.wav"
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PCM_DTYPES = {1: np.uint8, 2: np.int16, 4: np.int32}


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """``"{digit}_{speaker}.wav"`` -> a regex with one named group per ``{field}``."""
    parts, pos, seen = [], 0, set()
    for m in _FIELD.finditer(pattern):
        name = m.group(1)
        if name in seen:
            raise ValueError(f"pattern {pattern!r} names field {name!r} twice")
        seen.add(name)
        parts.append(re.escape(pattern[pos:m.start()]))
        parts.append(f"(?P<{name}>[^/]+?)")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    if not seen:
        raise ValueError(f"pattern {pattern!r} has no {{field}}")
    return re.compile("".join(parts))


def encode_field(values: list[str]) -> tuple[np.ndarray, list[str] | None]:
    """Field strings -> int64 codes (N,). Non-negative integers keep their value (names None);
    anything else gets codes in sorted order, returned with the sorted names."""
    if all(v.isdigit() for v in values):
        return np.asarray([int(v) for v in values], dtype=np.int64), None
    names = sorted(set(values))
    lookup = {v: i for i, v in enumerate(names)}
    return np.asarray([lookup[v] for v in values], dtype=np.int64), names


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """PCM ``.wav`` -> (float32 mono samples in [-1, 1], sample rate). Channels are averaged."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width not in _PCM_DTYPES:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported (8, 16 or 32-bit PCM)")
    data = np.frombuffer(raw, dtype=np.dtype(_PCM_DTYPES[width]).newbyteorder("<"))
    data = data.astype(np.float32)
    if width == 1:
        data = (data - 128.0) / 128.0
    else:
        data /= float(2 ** (8 * width - 1))
    return data.reshape(-1, channels).mean(axis=1), rate


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Crop to the first ``length`` samples or pad with zeros at the end."""
    if len(samples) >= length:
        return samples[:length]
    return np.pad(samples, (0, length - len(samples)))


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular HTK mel filters, float32 (n_mels, n_fft // 2 + 1), peaks of height 1."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= {sample_rate / 2}, got {f_min}, {f_max}")
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lo) / (mid - lo)
    falling = (hi - bins[None]) / (hi - mid)
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32))


def log_mel(waves: torch.Tensor, sample_rate: int, *, n_mels: int = 40, n_fft: int = 512,
            hop_length: int = 128, eps: float = 1e-6, chunk: int = 256) -> torch.Tensor:
    """Waveforms (N, T) -> ``log(mel power + eps)``, float32 (N, 1, n_mels, 1 + T // hop_length).

    Hann window of ``n_fft`` samples, centred frames.
    """
    fb = mel_filterbank(sample_rate, n_fft, n_mels)
    window = torch.hann_window(n_fft)
    out = []
    for start in range(0, waves.shape[0], chunk):
        spec = torch.stft(waves[start:start + chunk], n_fft, hop_length=hop_length,
                          window=window, center=True, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        out.append(torch.log(torch.einsum("mf,nft->nmt", fb, power) + eps))
    return torch.cat(out)[:, None]


@register_dataset("wav", how_to_get="pass path=<folder of .wav files>",
                  description="a folder of .wav files, labels from file names, log-mel")
def load_wav_folder(
    root: Path | None,
    *,
    path: str | Path | None = None,
    pattern: str = DEFAULT_PATTERN,
    label: str = "digit",
    seconds: float = 1.0,
    n_mels: int = 40,
    n_fft: int = 512,
    hop_length: int = 128,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> DatasetSplits:
    """Every ``*.wav`` under ``path`` whose name matches ``pattern`` (others are skipped, count
    logged). Each clip is cropped or zero-padded to ``seconds``; x = log-mel, float32
    (N, 1, n_mels, 1 + samples // hop_length), not normalised. y = field ``label``; the other
    fields are attributes. Integer fields keep their values, others get sorted codes with names in
    ``attribute_values`` (``class_names`` for the label). All files must share one sample rate.
    The split is stratified by label, deterministic from ``seed``.
    """
    if path is None:
        raise ValueError("data set 'wav' needs path=<folder of .wav files>")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise not_found(folder, "wav folder", "pass path=<folder of .wav files>")
    regex = pattern_regex(pattern)
    if label not in regex.groupindex:
        raise ValueError(f"label {label!r} is not a field of pattern {pattern!r}")
    matches = [(p, regex.fullmatch(p.name)) for p in sorted(folder.rglob("*.wav"))]
    files = [(p, m.groupdict()) for p, m in matches if m is not None]
    if len(files) < len(matches):
        log.info("wav: skipped %d files not matching %r", len(matches) - len(files), pattern)
    if not files:
        raise not_found(folder / pattern, "wav files matching the pattern")
    clips, rate = [], None
    for p, _ in files:
        samples, r = read_wav(p)
        if rate is not None and r != rate:
            raise ValueError(f"{p}: sample rate {r} Hz differs from {rate} Hz of the other files")
        rate = r
        clips.append(fit_length(samples, max(1, int(math.ceil(seconds * r)))))
    x = log_mel(torch.from_numpy(np.stack(clips)), rate, n_mels=n_mels, n_fft=n_fft,
                hop_length=hop_length)
    fields = {name: encode_field([f[name] for _, f in files]) for name in regex.groupindex}
    y, class_names = fields.pop(label)
    train, test = stratified_split(y, test_fraction, seed, "wav")
    return make_splits(
        "wav", x, y, train, test,
        attributes={k: v for k, (v, _) in fields.items()},
        class_names=class_names,
        attribute_values={k: names for k, (_, names) in fields.items() if names is not None},
    )
