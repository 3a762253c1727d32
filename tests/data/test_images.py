"""Reading labelled images: a folder of PNGs (against Pillow), an .npz, scikit-learn's digits,
random shifts against a naive loop, and the one-line errors for bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from lmforge.data.images import random_shift, read_images
from lmforge.errors import DataError


def write_pngs(root, n=3, size=6):
    rng = np.random.default_rng(0)
    arrays = {}
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / label / f"{i}.png")
            arrays[(label, i)] = a
    return arrays


def test_folder_of_pngs(tmp_path):
    arrays = write_pngs(tmp_path)
    rgb = read_images(str(tmp_path), size=6)
    assert rgb.labels == ["cat", "dog"] and rgb.y.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(rgb.x[4], arrays[("dog", 1)].transpose(2, 0, 1) / 255.0, atol=1e-6)
    gray = read_images(str(tmp_path), size=3, channels=1)
    want = np.asarray(Image.fromarray(arrays[("cat", 2)]).convert("L").resize((3, 3),
                                                                             Image.BILINEAR)) / 255.0
    assert gray.x.shape == (6, 1, 3, 3)
    np.testing.assert_allclose(gray.x[2, 0], want, atol=1e-6)


def test_npz_and_sklearn_digits(tmp_path):
    x = np.arange(4 * 5 * 5, dtype=np.uint8).reshape(4, 5, 5)
    np.savez(tmp_path / "d.npz", x=x, y=np.array(["b", "a", "b", "a"]))
    d = read_images(str(tmp_path / "d.npz"))
    assert d.labels == ["a", "b"] and d.y.tolist() == [1, 0, 1, 0]
    np.testing.assert_allclose(d.x[:, 0], x / 255.0, atol=1e-6)
    from sklearn.datasets import load_digits

    digits = read_images("sklearn:digits")
    ref = load_digits()
    assert digits.x.shape == (1797, 1, 8, 8) and digits.labels == [str(k) for k in range(10)]
    np.testing.assert_allclose(digits.x[:, 0], ref.images / 16.0, atol=1e-6)
    np.testing.assert_array_equal(digits.y, ref.target)
    train, val = digits.split(0.2, 0)
    assert len(val.y) == 359 and len(train.y) + len(val.y) == 1797
    assert not set(map(bytes, train.x)) & set(map(bytes, val.x[:20]))


def test_random_shift_matches_a_naive_shift():
    x = torch.rand(3, 1, 5, 5)
    g = torch.Generator().manual_seed(0)
    out = random_shift(x, 2, g)
    off = torch.randint(0, 5, (3, 2), generator=torch.Generator().manual_seed(0))
    for b, (i, j) in enumerate(off.tolist()):
        di, dj = 2 - i, 2 - j  # content moves by (di, dj)
        ref = torch.zeros(1, 5, 5)
        for r in range(5):
            for c in range(5):
                if 0 <= r - di < 5 and 0 <= c - dj < 5:
                    ref[0, r, c] = x[b, 0, r - di, c - dj]
        torch.testing.assert_close(out[b], ref)
    assert random_shift(x, 0, g) is x


@pytest.mark.parametrize("case", ["not-an-image", "empty-class", "npz-without-y", "one-class"])
def test_bad_input_is_one_line(tmp_path, case):
    write_pngs(tmp_path)
    path = tmp_path
    if case == "not-an-image":
        (tmp_path / "dog" / "notes.txt").write_text("hello")
        where = "notes.txt"
    elif case == "empty-class":
        (tmp_path / "zebra").mkdir()
        where = "zebra"
    elif case == "npz-without-y":
        np.savez(tmp_path / "x.npz", x=np.zeros((2, 4, 4)))
        path, where = tmp_path / "x.npz", "missing y"
    else:
        np.savez(tmp_path / "x.npz", x=np.zeros((2, 4, 4)), y=np.zeros(2))
        path, where = tmp_path / "x.npz", "2 classes"
    with pytest.raises(DataError) as e:
        read_images(str(path), size=4)
    assert where in str(e.value) and "\n" not in str(e.value)
