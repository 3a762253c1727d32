"""`task = "image-classify"` on 1-D signals end to end through the CLI, on a tiny .npz of
generated signals (a bump early vs late): `lmforge train` with model.arch switched between
image_cnn, gru and vit and nothing else, the model directory, `lmforge classify --image` on one
signal per .npy file (predictions equal to the model's own), signals of several channels, and
bad shapes exiting 2 with one line."""

import json

import numpy as np
import pytest
import torch

from lmforge.cli.main import main
from lmforge.data.images import read_images
from lmforge.errors import DataError
from lmforge.tasks.image_predict import ImageClassifier


def make_signals(path, n=48, length=16, channels=0):
    """x (N, L) — or (N, L, C) — with a bump at sample 3 (label "early") or 12 ("late")."""
    rng = np.random.default_rng(0)
    y = np.array(["early", "late"] * (n // 2))
    t = np.arange(length)
    centre = np.where(y == "early", 3, 12)[:, None]
    x = np.exp(-0.5 * (t - centre) ** 2) + 0.1 * rng.standard_normal((n, length))
    if channels:
        x = np.repeat(x[..., None], channels, -1) * np.arange(1, channels + 1)
    np.savez(path, x=x.astype(np.float32), y=y)
    return path


def write_config(path, data, out, arch="image_cnn", steps=30, signal=False):
    path.write_text(f'''task = "image-classify"
out_dir = "{out}"
seed = 0
[data]
path = "{data}"
[image_classify]
val_fraction = 0.25
signal = {str(signal).lower()}
[model]
arch = "{arch}"
d_model = 8
n_layer = 2
n_head = 2
patch_size = 4
[train]
batch_size = 8
max_steps = {steps}
lr = 1e-2
warmup_steps = 2
eval_every = 30
checkpoint_every = 30
progress = false
dtype = "float32"
''')
    return path


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return make_signals(tmp_path_factory.mktemp("sig") / "sig.npz")


@pytest.mark.parametrize("arch, kind", [("image_cnn", "SignalCNN"), ("gru", "SignalRNN"),
                                        ("vit", "SignalTransformer")])
def test_train_on_signals_switching_only_the_arch(npz, tmp_path, arch, kind, capsys):
    out = tmp_path / "model"
    assert main(["train", str(write_config(tmp_path / "c.toml", npz, out, arch))]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["image_classifier"] == {"labels": ["early", "late"], "image_size": 0,
                                        "channels": 1, "signal_length": 16}
    ev = json.loads((out / "eval.json").read_text())
    assert ev["val"]["n"] == 12 and ev["val"]["accuracy"] >= 10 / 12
    clf = ImageClassifier.load(out)
    assert type(clf.model).__name__ == kind and clf.signal_length == 16
    # the logits of the model directory on the val rows reproduce eval.json's accuracy
    data = read_images(str(npz))
    _, val = data.split(0.25, 0)
    with torch.no_grad():
        acc = (clf.model(torch.from_numpy(val.x)).argmax(-1).numpy() == val.y).mean()
    assert acc == pytest.approx(ev["val"]["accuracy"])
    # lmforge classify --image on one signal per .npy file
    files = []
    for i in (0, 1):
        files.append(str(tmp_path / f"s{i}.npy"))
        np.save(files[-1], data.x[i, 0])
    res = tmp_path / "r.json"
    capsys.readouterr()
    assert main(["classify", str(out), "--image", files[0], "--image", files[1],
                 "--json", str(res)]) == 0
    got = [p["label"] for p in json.loads(res.read_text())["predictions"]]
    probs = clf.predict_proba(files)
    assert got == [clf.labels[k] for k in probs.argmax(-1)]
    with torch.no_grad():
        want = clf.model(torch.from_numpy(data.x[:2])).softmax(-1).numpy()
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)


def test_signals_with_channels(tmp_path):
    npz = make_signals(tmp_path / "c3.npz", channels=3)
    data = read_images(str(npz), signal=True)
    raw = np.load(npz)["x"]
    assert data.x.shape == (48, 3, 16) and data.is_signal
    np.testing.assert_array_equal(data.x, raw.transpose(0, 2, 1))  # values as stored
    out = tmp_path / "m"
    cfg = write_config(tmp_path / "c.toml", npz, out, "gru", steps=20, signal=True)
    assert main(["train", str(cfg)]) == 0
    assert ImageClassifier.load(out).channels == 3


def test_mnist1d_source_uses_the_standard_split(monkeypatch):
    pytest.importorskip("mnist1d")
    import mnist1d.data as md

    fake = {"x": np.zeros((8, 40)), "y": np.arange(8) % 10, "x_test": np.ones((2, 40)),
            "y_test": np.array([3, 4])}
    monkeypatch.setattr(md, "make_dataset", lambda args: fake)
    data = read_images("mnist1d:")
    train, test = data.split(0.2, 0)
    assert data.x.shape == (10, 1, 40) and len(train.y) == 8
    np.testing.assert_array_equal(test.x, np.ones((2, 1, 40)))
    assert test.y.tolist() == [3, 4]


def test_bad_signal_files_exit_2_with_one_line(npz, tmp_path, capsys):
    for name, x, needle in (("one.npz", np.zeros(6), "(N, L)"),
                            ("nan.npz", np.full((6, 8), np.nan), "NaN"),
                            ("wide.npz", np.zeros((6, 8, 2)), "signal = true")):
        np.savez(tmp_path / name, x=x, y=np.arange(6) % 2)
        cfg = write_config(tmp_path / "b.toml", tmp_path / name, tmp_path / name[:-4])
        assert main(["train", str(cfg)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0] and name in err[0], err
    with pytest.raises(DataError, match="image_size = 0"):
        read_images(str(npz), size=8)
    out = tmp_path / "m"
    assert main(["train", str(write_config(tmp_path / "ok.toml", npz, out, steps=2))]) == 0
    np.save(tmp_path / "short.npy", np.zeros(5))
    assert main(["classify", str(out), "--image", str(tmp_path / "short.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "16 samples" in err[0]
