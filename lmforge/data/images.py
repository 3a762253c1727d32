"""Labelled images for ``task = "image-classify"`` (docs/baselines.md).

Three sources, all read into float32 pixels in [0, 1], (N, C, H, W), with integer labels:

* a folder with one sub-folder per class (the sub-folder name is the label), holding PNG /
  JPEG / BMP / GIF files (read with Pillow, converted to grayscale or RGB, resized);
* an ``.npz`` file with ``x`` (N, H, W) or (N, H, W, C) — uint8 0..255 or floats in [0, 1] —
  and ``y`` (N,) labels (integers or strings); read without pickle;
* ``sklearn:digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10
  classes), no download.

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

__all__ = ["IMAGE_SUFFIXES", "ImageSet", "SKLEARN_DIGITS", "load_image", "random_shift",
           "read_images", "resize"]


@dataclass
class ImageSet:
    """Images and labels: ``x`` (N, C, H, W) float32 in [0, 1], ``y`` (N,) int64 class ids
    into ``labels`` (the class names)."""

    x: np.ndarray
    y: np.ndarray
    labels: list[str]
    source: str

    def subset(self, idx: np.ndarray) -> "ImageSet":
        return ImageSet(self.x[idx], self.y[idx], self.labels, self.source)

    def split(self, fraction: float, seed: int) -> tuple["ImageSet", "ImageSet"]:
        """(rest, held out): a seeded ``fraction`` of the rows held out (at least 1 each)."""
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
                        f"1, 3 or 4, got {arr.dtype} {arr.shape}")
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


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
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
    return _to_pixels(x, str(path)), y, labels


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


def read_images(path: str, size: int = 0, channels: int = 0) -> ImageSet:
    """The images at ``path`` (folder, ``.npz`` or ``sklearn:digits``), converted to
    ``channels`` (0 = as stored: 1 for grayscale, 3 for colour) and resized to
    ``size`` x ``size`` (0 = as stored; a folder needs a size)."""
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
            x, y, labels = _read_npz(p)
        else:
            raise DataError(f"data.path = {path!r}: give a folder of class sub-folders, an .npz "
                            f"with x and y, or {SKLEARN_DIGITS!r}")
    if len(labels) < 2:
        raise DataError(f"{path}: need at least 2 classes, found {len(labels)}")
    x = _channels(x, channels or x.shape[1])
    if size:
        x = resize(x, size)
    if x.shape[-1] != x.shape[-2]:
        raise DataError(f"{path}: images are {x.shape[-2]}x{x.shape[-1]}; set "
                        "image_classify.image_size to make them square")
    return ImageSet(np.ascontiguousarray(x, dtype=np.float32), y, labels, path)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of (B, C, H, W) moved by its own random offset of up to ``max_shift``
    pixels in each direction, the border filled with zeros (light augmentation)."""
    if max_shift <= 0:
        return x
    B, C, H, W = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # (B, C, H+2s, W+2s)
    off = torch.randint(0, 2 * s + 1, (B, 2), generator=generator)
    return torch.stack([padded[b, :, i:i + H, j:j + W] for b, (i, j) in enumerate(off.tolist())])
