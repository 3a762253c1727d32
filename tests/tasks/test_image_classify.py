"""`task = "image-classify"` end to end through the CLI on a tiny folder of generated PNGs
(bright left half vs bright right half): `lmforge train`, `lmforge classify --image` with the
attention plot, the model directory, switching model.arch to image_cnn, and bad input exiting
2 with one line."""

import json

import numpy as np
import pytest
from PIL import Image

from lmforge.cli.main import main
from lmforge.tasks.image_predict import ImageClassifier


def make_folder(root, n=12, size=8):
    rng = np.random.default_rng(0)
    for label, side in (("left", 0), ("right", 1)):
        (root / label).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 60, (size, size), dtype=np.uint8)
            a[:, side * size // 2:(side + 1) * size // 2] += 180
            Image.fromarray(a).save(root / label / f"{i}.png")
    return root


def write_config(path, data, out, arch="vit", steps=40):
    path.write_text(f'''task = "image-classify"
out_dir = "{out}"
seed = 0
[data]
path = "{data}"
[image_classify]
image_size = 8
channels = 1
val_fraction = 0.25
shift = 1
[model]
arch = "{arch}"
d_model = 16
n_layer = 1
n_head = 2
patch_size = 4
[train]
batch_size = 8
max_steps = {steps}
lr = 5e-3
warmup_steps = 2
eval_every = 20
checkpoint_every = 20
progress = false
dtype = "float32"
''')
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory, folder):
    d = tmp_path_factory.mktemp("vit")
    assert main(["train", str(write_config(d / "vit.toml", folder, d / "model"))]) == 0
    return d / "model"


def test_train_writes_an_image_classifier(vit_dir):
    meta = json.loads((vit_dir / "meta.json").read_text())
    assert meta["task"] == "image-classify"
    assert meta["image_classifier"] == {"labels": ["left", "right"], "image_size": 8, "channels": 1}
    ev = json.loads((vit_dir / "eval.json").read_text())
    assert ev["val"]["n"] == 6 and ev["val"]["accuracy"] >= 5 / 6
    assert not (vit_dir / "tokenizer.json").exists()


def test_classify_image_and_attention(vit_dir, folder, tmp_path, capsys):
    imgs = [str(folder / "left" / "0.png"), str(folder / "right" / "3.png")]
    out = tmp_path / "att.png"
    res = tmp_path / "r.json"
    assert main(["classify", str(vit_dir), "--image", imgs[0], "--image", imgs[1],
                 "--attention", str(out), "--json", str(res)]) == 0
    shown = capsys.readouterr().out
    assert out.is_file() and out.stat().st_size > 1000 and "left" in shown
    got = json.loads(res.read_text())
    clf = ImageClassifier.load(vit_dir)
    probs = clf.predict_proba(imgs)
    assert [p["label"] for p in got["predictions"]] == [clf.labels[k] for k in probs.argmax(-1)]
    assert [p["label"] for p in got["predictions"]] == ["left", "right"]
    att = clf.attention(imgs[0])
    assert att["rollout"].shape == (2, 2) and att["heads"].shape == (2, 2, 2)
    assert att["layers"].shape == (1, 2, 5, 5)  # (L, H, [CLS] + 4 patches, ...)
    np.testing.assert_allclose(att["heads"], att["layers"][0, :, 0, 1:].reshape(2, 2, 2).numpy())


def test_switching_arch_to_image_cnn(folder, tmp_path):
    cfg = write_config(tmp_path / "cnn.toml", folder, tmp_path / "cnn", arch="image_cnn", steps=20)
    assert main(["train", str(cfg)]) == 0
    ev = json.loads((tmp_path / "cnn" / "eval.json").read_text())
    assert ev["val"]["accuracy"] >= 4 / 6


def test_bad_input_exits_2_with_one_line(folder, tmp_path, vit_dir, capsys):
    bad = make_folder(tmp_path / "bad")
    (bad / "left" / "readme.txt").write_text("not an image")
    assert main(["train", str(write_config(tmp_path / "b.toml", bad, tmp_path / "o"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "readme.txt" in err[0]
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 8, 8)))
    assert main(["train", str(write_config(tmp_path / "c.toml", tmp_path / "x.npz",
                                           tmp_path / "o2"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing y" in err[0]
    assert main(["classify", str(vit_dir), "--image", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an image" in err[0]
