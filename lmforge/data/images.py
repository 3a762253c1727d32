"""Labelled images and 1-D signals for ``task = "image-classify"`` (docs/baselines.md).

Images are read into float32 pixels in [0, 1], (N, C, H, W), with integer labels, from:

* a folder with one sub-folder per class (the sub-folder name is the label), holding PNG /
  JPEG / BMP / GIF files (read with Pillow, converted to grayscale or RGB, resized);
* an ``.npz`` file with ``x`` (N, H, W) or (N, H, W, C) — uint8 0..255 or floats in [0, 1] —
  and ``y`` (N,) labels (integers or strings); read without pickle;
* ``sklearn:digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10
  classes), no download.

1-D signals are read into float32 values as stored (no rescaling), (N, C, L), from:

* an ``.npz`` with ``x`` (N, L) — one channel — or, with ``signal = True``, (N, L, C), and ``y``;
* ``mnist1d:``: MNIST-1D (Greydanus, 2020) built procedurally with the ``mnist1d`` package and
  its default arguments (5,000 signals of 40 samples, 10 classes); its own last 1,000 rows
  are the standard test split (``ImageSet.fixed_val``).

Every problem (a non-image file, an empty class folder, an ``.npz`` without ``y``) is a
:class:`~lmforge.errors.DataError` naming the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SKLEARN_DIGITS = "sklearn:digits"
MNIST1D = "mnist1d:"

__all__ = ["IMAGE_SUFFIXES", "ImageSet", "MNIST1D", "SKLEARN_DIGITS", "load_image", "load_signal",
           "random_shift", "read_images", "read_mnist1d", "resize"]


@dataclass
class ImageSet:
    """Images and labels: ``x`` (N, C, H, W) float32 in [0, 1] — or 1-D signals (N, C, L)
    — and ``y`` (N,) int64 class ids into ``labels`` (the class names)."""

    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    source: str
    fixed_val: int = 0
    """> 0: the last ``fixed_val`` rows are the source's own test split, which :meth:`split`
    holds out instead of a seeded sample (MNIST-1D)."""

    @property
    def is_signal(self) -> bool:
        """Whether the rows are 1-D signals (N, C, L) rather than images (N, C, H, W)."""
        return self.x.ndim == 3

    def subset(self, idx: np.ndarray) -> "ImageSet":
        return ImageSet(self.x[idx], self.y[idx], self.labels, self.source)

    def split(self, fraction: float, seed: int) -> tuple["ImageSet", "ImageSet"]:
        """(rest, held out): a seeded ``fraction`` of the rows held out (at least 1 each), or
        the source's own test rows when it has them (``fixed_val``)."""
        if self.fixed_val:
            n = len(self.y) - self.fixed_val
            return self.subset(np.arange(n)), self.subset(np.arange(n, len(self.y)))
        order = np.random.default_rng(seed).permutation(len(self.y))
        n = min(len(order) - 1, max(1, round(fraction * len(order))))
        return self.subset(np.sort(order[n:])), self.subset(np.sort(order[:n]))


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, size, size), bilinear with antialiasing (unchanged if equal)."""
    if x.shape[-2:] == (size, size):
        return x
    t = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear",
                      align_corners=False, antialias=True)
    return t.clamp(0, 1).numpy()


def _to_pixels(arr: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W) or (N, H, W, C), uint8 or float -> (N, C, H, W) float32 in [0, 1]."""
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4) or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{where}: x must be numbers shaped (N, H, W) or (N, H, W, C) with C = "
                        f"1, 3 or 4 (1-D signals: (N, L)), got {arr.dtype} {arr.shape}")
    x = arr[..., :3].astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer) or x.max(initial=0) > 1.0:
        x = x / 255.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _channels(x: np.ndarray, channels: int) -> np.ndarray:
    """(N, C, H, W) -> (N, channels, H, W): RGB to gray by luminance, gray to RGB by copying."""
    c = x.shape[1]
    if channels == c:
        return x
    if channels == 1:
        return (x * np.array([0.299, 0.587, 0.114], np.float32)[None, :, None, None]).sum(
            1, keepdims=True)
    return np.repeat(x, 3, axis=1)


def _label_ids(raw: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Labels (ints or strings) -> class ids and the class names (numbers in numeric order)."""
    if raw.ndim != 1:
        raise DataError(f"{where}: y must be one label per image, shaped (N,), got {raw.shape}")
    values = raw.tolist()
    names = sorted(set(values))
    ids = {v: i for i, v in enumerate(names)}
    return np.array([ids[v] for v in values], dtype=np.int64), [str(v) for v in names]


def _to_signals(arr: np.ndarray, where: str, signal: bool) -> np.ndarray:
    """(N, L), or with ``signal`` (N, L, C), numbers -> (N, C, L) float32, values as stored."""
    if not np.issubdtype(arr.dtype, np.number) or arr.ndim not in ((2, 3) if signal else (2,)) \
            or arr.shape[1] < 1:
        want = "(N, L) or (N, L, C)" if signal else "(N, L)"
        raise DataError(f"{where}: 1-D signals need x of numbers shaped {want}, got {arr.dtype} "
                        f"{arr.shape}" + ("" if signal else "; for several channels store "
                                          "(N, L, C) and set image_classify.signal = true"))
    x = arr.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{where}: x holds NaN or infinite values; clean the signals first")
    return np.ascontiguousarray(x[:, None, :] if x.ndim == 2 else x.transpose(0, 2, 1))


def _read_npz(path: Path, signal: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise DataError(f"{path}: the .npz needs arrays 'x' (images) and 'y' (labels); "
                                f"missing {', '.join(missing)} (it has {', '.join(z.files) or 'none'})")
            x, raw = z["x"], z["y"]
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npz without pickled objects ({e})") from None
    if len(x) != len(raw) or len(x) == 0:
        raise DataError(f"{path}: x and y need the same, non-zero number of rows, got "
                        f"{len(x)} and {len(raw)}")
    y, labels = _label_ids(raw, str(path))
    if signal or x.ndim == 2:
        return _to_signals(x, str(path), signal), y, labels
    return _to_pixels(x, str(path)), y, labels


def read_mnist1d() -> "ImageSet":
    """MNIST-1D with the ``mnist1d`` package's default arguments: its 4,000 training then
    1,000 test signals, (5000, 1, 40), the test rows held out by :meth:`ImageSet.split`."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset  # (optional, only this source)
    except ImportError:
        raise DataError(f"data.path = {MNIST1D!r} builds MNIST-1D with the mnist1d package: "
                        "pip install mnist1d") from None
    d = make_dataset(get_dataset_args())
    x = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)[:, None, :]  # (N, 1, 40)
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return ImageSet(x, y, [str(k) for k in range(10)], MNIST1D, fixed_val=len(d["y_test"]))


def load_signal(path: str | Path, length: int, channels: int) -> np.ndarray:
    """One signal from a ``.npy`` file or an ``.npz`` with ``x``: (L,), (L, C), (1, L) or
    (1, L, C) -> (channels, length) float32."""
    p = Path(path)
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                arr = z["x"] if "x" in z.files else None
        else:
            arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable .npy/.npz without pickled objects ({e})") from None
    arr = None if arr is None else np.asarray(arr)
    if arr is not None and arr.ndim >= 2 and arr.shape[0] == 1 and arr.shape[1] == length:
        arr = arr[0]
    if arr is None or not np.issubdtype(arr.dtype, np.number) or arr.shape[:1] != (length,) \
            or arr.shape[1:] not in ((), (channels,)):
        got = "no x" if arr is None else f"{arr.dtype} {arr.shape}"
        raise DataError(f"{path}: the model reads one signal of {length} samples and {channels} "
                        f"channel(s), shaped ({length},) or ({length}, {channels}); got {got}")
    arr = arr.astype(np.float32)
    return arr[None] if arr.ndim == 1 else np.ascontiguousarray(arr.T)


def load_image(path: str | Path, size: int, channels: int) -> np.ndarray:
    """One image file -> (channels, size, size) float32 in [0, 1] (Pillow)."""
    from PIL import Image, UnidentifiedImageError  # (optional dependency, only for image files)

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if size:
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not an image Pillow can read ({type(e).__name__}); keep only "
                        f"{'/'.join(s[1:] for s in IMAGE_SUFFIXES)} files in the folder") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _read_folder(root: Path, size: int, channels: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root}: an image folder needs one sub-folder per class (at least 2), "
                        f"found {len(classes)}")
    if not size:
        raise DataError(f"{root}: set image_classify.image_size (images in a folder are resized "
                        "to one size)")
    xs, ys = [], []
    for k, d in enumerate(classes):
        files = sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise DataError(f"{d}: the class folder is empty; add images or remove it")
        for f in files:
            xs.append(load_image(f, size, channels))
            ys.append(k)
    return np.stack(xs), np.array(ys, dtype=np.int64), [d.name for d in classes]


def read_images(path: str, size: int = 0, channels: int = 0, signal: bool = False) -> ImageSet:
    """The images at ``path`` (folder, ``.npz`` or ``sklearn:digits``), converted to
    ``channels`` (0 = as stored: 1 for grayscale, 3 for colour) and resized to
    ``size`` x ``size`` (0 = as stored; a folder needs a size). Signals (``mnist1d:``, an
    ``.npz`` with x (N, L), or (N, L, C) with ``signal``) come as stored, (N, C, L)."""
    if path == MNIST1D or (signal and not path.endswith(".npz")):
        if path != MNIST1D:
            raise DataError(f"data.path = {path!r}: signals come from an .npz with x (N, L, C) "
                            f"and y, or {MNIST1D!r}")
        return _check_signals(read_mnist1d(), size, channels)
    if path == SKLEARN_DIGITS:
        from sklearn.datasets import load_digits  # (scikit-learn only for this source)

        d = load_digits()
        x, y, labels = d.images[:, None].astype(np.float32) / 16.0, d.target.astype(np.int64), \
            [str(k) for k in range(10)]
    else:
        p = Path(path)
        if p.is_dir():
            x, y, labels = _read_folder(p, size, channels or 3)
        elif p.is_file() and p.suffix == ".npz":
            x, y, labels = _read_npz(p, signal)
        else:
            raise DataError(f"data.path = {path!r}: give a folder of class sub-folders, an .npz "
                            f"with x and y, {SKLEARN_DIGITS!r} or {MNIST1D!r}")
    if len(labels) < 2:
        raise DataError(f"{path}: need at least 2 classes, found {len(labels)}")
    if x.ndim == 3:
        return _check_signals(ImageSet(x, y, labels, path), size, channels)
    x = _channels(x, channels or x.shape[1])
    if size:
        x = resize(x, size)
    if x.shape[-1] != x.shape[-2]:
        raise DataError(f"{path}: images are {x.shape[-2]}x{x.shape[-1]}; set "
                        "image_classify.image_size to make them square (or, for 1-D signals "
                        "shaped (N, L, C), image_classify.signal = true)")
    return ImageSet(np.ascontiguousarray(x, dtype=np.float32), y, labels, path)


def _check_signals(data: ImageSet, size: int, channels: int) -> ImageSet:
    """Signals keep their length and channels: refuse settings that would change them."""
    if size:
        raise DataError(f"{data.source}: holds 1-D signals, which keep their length; set "
                        "image_classify.image_size = 0 (it resizes images)")
    if channels and channels != data.x.shape[1]:
        raise DataError(f"{data.source}: the signals have {data.x.shape[1]} channel(s); set "
                        f"image_classify.channels = 0 or {data.x.shape[1]}")
    if len(data.labels) < 2:
        raise DataError(f"{data.source}: need at least 2 classes, found {len(data.labels)}")
    return data


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of (B, C, H, W) — or signal of (B, C, L) — moved by its own random offset of
    up to ``max_shift`` pixels (samples) in each direction, the border filled with zeros
    (light augmentation)."""
    if max_shift <= 0:
        return x
    if x.ndim == 3:  # signals
        L, s = x.shape[-1], max_shift
        padded = F.pad(x, (s, s))  # (B, C, L+2s)
        off = torch.randint(0, 2 * s + 1, (x.shape[0],), generator=generator)
        return torch.stack([padded[b, :, i:i + L] for b, i in enumerate(off.tolist())])
    B, C, H, W = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # (B, C, H+2s, W+2s)
    off = torch.randint(0, 2 * s + 1, (B, 2), generator=generator)
    return torch.stack([padded[b, :, i:i + H, j:j + W] for b, (i, j) in enumerate(off.tolist())])
