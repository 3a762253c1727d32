"""The forgetting report: general-text perplexity before and after fine-tuning. A tiny decoder
pre-trained on Shakespeare, then fine-tuned on one narrow conversation, gets worse on held-out
Shakespeare; the report's numbers are those of separate perplexity calls, of `lmforge eval`
and of `lmforge eval --baseline`, and an SFT run with `sft.general_text` stores them."""

import json
from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.errors import DataError
from lmforge.evaluation.forgetting import (compare_perplexity, forgetting_report,
                                           general_perplexity, read_text)
from lmforge.modeldir import load_model_dir
from lmforge.tasks import train_task
from lmforge.tasks import RunConfig

SHAKESPEARE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tinyshakespeare" \
    / "input.txt"


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> dict[str, Path]:
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} not present")
    d = tmp_path_factory.mktemp("texts")
    raw = SHAKESPEARE.read_text(encoding="utf-8")
    (d / "train.txt").write_text(raw[:40_000], encoding="utf-8")
    (d / "general.txt").write_text(raw[-4_000:], encoding="utf-8")  # held out
    rows = [{"messages": [{"role": "user", "content": "Status?"},
                          {"role": "assistant", "content": "All systems nominal. All nominal."}]}
            for _ in range(24)]  # one narrow conversation, many times
    (d / "narrow.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"train": d / "train.txt", "general": d / "general.txt", "narrow": d / "narrow.jsonl",
            "dir": d}


@pytest.fixture(scope="module")
def base_dir(texts) -> Path:
    """A tiny decoder pre-trained briefly on Shakespeare (general text)."""
    out = texts["dir"] / "base"
    cfg = RunConfig.load(None, [
        f'out_dir="{out}"', f'data.path="{texts["train"]}"', 'tokenizer.kind="bpe"',
        "tokenizer.vocab_size=300", "model.d_model=48", "model.n_layer=2", "model.n_head=4",
        "model.context_length=64", "train.batch_size=16", "train.max_steps=120", "train.lr=1e-2",
        "train.warmup_steps=10", "train.eval_every=1000", "train.checkpoint_every=0",
        "train.progress=false", 'train.dtype="float32"', "seed=0"])
    train_task(cfg)
    return out


def sft(base_dir, texts, out, method="full", steps=30, general=True):
    ov = ['task="sft"', f'out_dir="{out}"', f'sft.init_from="{base_dir}"',
          f'sft.method="{method}"', f'sft.data="{texts["narrow"]}"', "sft.max_length=64",
          "sft.val_fraction=0.2", f"train.max_steps={steps}", "train.batch_size=8",
          "train.lr=3e-3", "train.warmup_steps=3", "train.eval_every=100",
          "train.checkpoint_every=0", "train.progress=false", 'train.dtype="float32"',
          # the old flat keys and sft.method, kept on purpose: older configs still load
          "sft.lora_rank=8", 'sft.lora_targets=["*.attn.*_proj", "*.ff.*_proj"]']
    if general:
        ov.append(f'sft.general_text="{texts["general"]}"')
    return train_task(RunConfig.load(None, ov), overwrite=True)


@pytest.fixture(scope="module")
def tuned(base_dir, texts):
    return sft(base_dir, texts, texts["dir"] / "tuned")


def test_narrow_fine_tuning_raises_general_perplexity(tuned):
    m = tuned.metrics
    assert m["heldout_loss_after"] < m["heldout_loss_before"]  # the narrow task was learnt
    # measured: general perplexity 53 -> 209 (2 threads; 55 -> 184 with 1) after 30 full
    # steps on one conversation
    assert m["general_ppl_after"] > 1.5 * m["general_ppl_before"]
    assert m["general_ppl_change"] == pytest.approx(
        m["general_ppl_after"] / m["general_ppl_before"] - 1)
    meta = json.loads((tuned.out_dir / "meta.json").read_text())
    f = meta["forgetting"]
    assert f["ppl_before"] == m["general_ppl_before"] and f["ppl_after"] == m["general_ppl_after"]
    assert f["text"].endswith("general.txt") and f["n_chars"] == 4000
    assert meta["metrics"]["general_ppl_after"] == m["general_ppl_after"]
    assert "general text ppl before" in tuned.report and "change" in tuned.report


def test_report_equals_separate_perplexity_calls(base_dir, tuned, texts):
    base, after = load_model_dir(base_dir), load_model_dir(tuned.out_dir)
    text = read_text(texts["general"])
    r = forgetting_report(base.model, after.model, base.tokenizer, text)
    sep_b = general_perplexity(base.model, base.tokenizer, text)
    sep_a = general_perplexity(after.model, after.tokenizer, text)
    assert r["ppl_before"] == sep_b.perplexity and r["ppl_after"] == sep_a.perplexity
    assert r["loss_change"] == sep_a.loss - sep_b.loss and r["same_tokens"]
    # the SFT run measured the same (its model in memory = the saved one)
    assert tuned.metrics["general_ppl_before"] == pytest.approx(sep_b.perplexity, rel=1e-6)
    assert tuned.metrics["general_ppl_after"] == pytest.approx(sep_a.perplexity, rel=1e-6)
    with pytest.raises(DataError, match="empty"):
        forgetting_report(base.model, after.model, base.tokenizer, "")
    with pytest.raises(DataError, match="different texts"):
        compare_perplexity(sep_b, general_perplexity(base.model, base.tokenizer, text[:2000]))


def test_eval_with_baseline_prints_both_and_the_change(base_dir, tuned, texts, tmp_path, capsys):
    general = str(texts["general"])
    assert main(["eval", str(base_dir), "--data", general, "--json", str(tmp_path / "b.json")]) == 0
    assert main(["eval", str(tuned.out_dir), "--data", general,
                 "--json", str(tmp_path / "a.json")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tuned.out_dir), "--data", general, "--baseline", str(base_dir),
                 "--json", str(tmp_path / "ab.json")]) == 0
    out = capsys.readouterr().out
    b, a, ab = (json.loads((tmp_path / f).read_text()) for f in ("b.json", "a.json", "ab.json"))
    f = ab["forgetting"]
    assert f["ppl_before"] == b["perplexity"] and f["ppl_after"] == a["perplexity"]
    assert ab["baseline"]["perplexity"] == b["perplexity"] and ab["perplexity"] == a["perplexity"]
    assert f["change"] == pytest.approx(a["perplexity"] / b["perplexity"] - 1)
    assert f"perplexity {b['perplexity']:.3f}" in out and f"perplexity {a['perplexity']:.3f}" in out
    assert f"{100 * f['change']:+.2f}%" in out


def test_lora_sft_reports_forgetting_too(base_dir, texts, tmp_path):
    r = sft(base_dir, texts, tmp_path / "lora", method="lora", steps=20)
    m = r.metrics
    assert m["general_ppl_after"] > m["general_ppl_before"]
    merged = load_model_dir(tmp_path / "lora")
    text = read_text(texts["general"])
    ppl = general_perplexity(merged.model, merged.tokenizer, text).perplexity
    assert m["general_ppl_after"] == pytest.approx(ppl, rel=1e-4)  # merged = adapted in memory
    assert json.loads((tmp_path / "lora" / "meta.json").read_text())["forgetting"]["ppl_after"] \
        == m["general_ppl_after"]


def test_general_max_chars_and_errors(base_dir, texts, tmp_path):
    from lmforge.errors import ConfigError

    with pytest.raises(ConfigError, match="sft.general_max_chars"):
        RunConfig.load(None, ['task="sft"', "sft.general_max_chars=-1"])
    r = train_task(RunConfig.load(None, [
        'task="sft"', f'out_dir="{tmp_path / "s"}"', f'sft.init_from="{base_dir}"',
        f'sft.data="{texts["narrow"]}"', f'sft.general_text="{texts["general"]}"',
        "sft.general_max_chars=1000", "train.max_steps=2", "train.batch_size=4",
        "train.checkpoint_every=0", "train.progress=false", 'train.dtype="float32"']))
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["forgetting"]["n_chars"] == 1000 and "general_ppl_before" in r.metrics
    with pytest.raises(DataError):
        train_task(RunConfig.load(None, [
            'task="sft"', f'out_dir="{tmp_path / "t"}"', f'sft.init_from="{base_dir}"',
            f'sft.general_text="{tmp_path / "missing.txt"}"', "train.max_steps=2",
            "train.progress=false"]))
