"""`lmforge explain` and `lmforge attention` end to end (in process), on the toy model and on
tiny saved model directories, and their one-line messages for bad input."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "explain"))
from explain_helpers import save_all

from lmforge.cli.main import main
from lmforge.explain.tiny import tiny_model

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return save_all(tmp_path_factory.mktemp("models"))


def _one_error_line(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_explain_tiny_prints_the_steps_and_writes_a_page(tmp_path, capsys):
    page = tmp_path / "page.html"
    assert main(["explain", "--tiny", "--out", str(page)]) == 0
    out = capsys.readouterr().out
    model, tok = tiny_model("abca")
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([[0, 1, 2, 0]]))[0, -1], -1)
    best = tok.id_to_token(int(probs.argmax()))
    assert f"top: {best!r} {float(probs.max()):.3f}" in out
    assert "row sums: 1.0000 1.0000 1.0000 1.0000" in out and "all agree" in out
    html = page.read_text(encoding="utf-8")
    assert "softmax weights" in html and "http" not in html
    _one_error_line(capsys, ["explain", "--tiny", "--out", str(page)], "--overwrite")


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_explain_a_model_directory(kind, dirs, capsys):
    assert main(["explain", str(dirs[kind]), "--text", "bad cab", "--layer", "-1"]) == 0
    out = capsys.readouterr().out
    assert f"{kind}: 7 tokens" in out and "block 1 opened up" in out and "all agree" in out
    assert "logits" in out and "top:" in out


@pytest.mark.parametrize("kind", ["decoder", "encoder", "seq2seq"])
def test_attention_writes_pictures_and_a_page(kind, dirs, tmp_path, capsys):
    out = tmp_path / "att"
    extra = ["--target", "dab"] if kind == "seq2seq" else []
    assert main(["attention", str(dirs[kind]), "--text", "bad cab", "--out", str(out),
                 "--layer", "1", "--head", "1"] + extra) == 0
    names = {"head.png", "model_view.png", "rollout.png", "index.html", "explore.json"}
    if kind == "seq2seq":
        names |= {"cross.png", "cross_model_view.png"}
    assert {p.name for p in out.iterdir()} == names
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == PNG
    data = json.loads((out / "explore.json").read_text())
    assert data["kind"] == kind and len(data["attention"]) == 2
    if kind == "seq2seq":
        assert data["target_tokens"] == ["d", "a", "b", "</s>"]
        assert len(data["cross_attention"][0][0]) == 4  # target rows
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(names) - 2 and "http" not in page
    if kind != "decoder":
        return
    capsys.readouterr()
    _one_error_line(capsys, ["attention", str(dirs[kind]), "--text", "a", "--out", str(out)],
                    "not empty")
    assert main(["attention", str(dirs[kind]), "--text", "a", "--out", str(out),
                 "--overwrite"]) == 0
    assert json.loads((out / "explore.json").read_text())["tokens"][0] == "a"


def test_bad_input_is_one_line_and_exit_2(dirs, tmp_path, capsys):
    _one_error_line(capsys, ["explain", str(tmp_path / "none"), "--text", "a"], "does not exist")
    _one_error_line(capsys, ["explain", str(dirs["decoder"]), "--text", ""], "--text is empty")
    _one_error_line(capsys, ["explain", str(dirs["decoder"])], "--text is required")
    _one_error_line(capsys, ["explain", str(dirs["decoder"]), "--text", "ab", "--layer", "5"],
                    "--layer 5")
    _one_error_line(capsys, ["explain"], "MODEL_DIR or --tiny")
    _one_error_line(capsys, ["explain", "--tiny", "--text", "abcdefghij"], "at most 8")
    _one_error_line(capsys, ["attention", str(tmp_path / "none"), "--text", "a", "--out",
                             str(tmp_path / "o")], "does not exist")
    _one_error_line(capsys, ["attention", str(dirs["encoder"]), "--text", " ", "--out",
                             str(tmp_path / "o")], "is empty")
    _one_error_line(capsys, ["attention", str(dirs["decoder"]), "--text", "ab", "--out",
                             str(tmp_path / "o"), "--target", "x"], "--target is for")
    _one_error_line(capsys, ["attention", str(dirs["decoder"]), "--text", "ab", "--out",
                             str(tmp_path / "o"), "--head", "7"], "--head 7")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["decoder", "seq2seq"])
def test_attention_head_ablation(kind, dirs, tmp_path):
    """``--ablation``: every head switched off in turn; each cell equals ablate_head's answer
    for that head, and the grid is drawn."""
    from lmforge.explain.explorer import ablate_head, load_for_explore

    out = tmp_path / "abl"
    extra = ["--target", "dab"] if kind == "seq2seq" else []
    assert main(["attention", str(dirs[kind]), "--text", "bad cab", "--out", str(out),
                 "--ablation"] + extra) == 0
    assert (out / "ablation.png").read_bytes()[:8] == PNG
    grid = json.loads((out / "explore.json").read_text())["ablation"]
    model, tok = load_for_explore(dirs[kind])
    one = ablate_head(model, tok, "bad cab", 1, 1, "dab" if kind == "seq2seq" else None)
    assert len(grid["delta_loss"]) == 2 and len(grid["delta_loss"][1]) == 2
    assert grid["delta_loss"][1][1] == round(one["loss_ablated"] - one["loss"], 4)
    assert grid["delta_prob"][1][1] == round(one["prob_ablated"] - one["prob"], 4)
    assert any(v != 0 for row in grid["delta_loss"] for v in row)  # heads matter
