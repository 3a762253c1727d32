"""rnn/lstm/gru language models through the causal-LM task: `--set model.arch=lstm` on the
shakespeare-char preset trains, resumes exactly, writes a model directory that reloads,
generates and is scored; what a recurrent LM cannot do is refused naming the field."""

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import ConfigError
from lmforge.evaluation.perplexity import perplexity
from lmforge.inference import GenerationConfig, generate
from lmforge.modeldir import load_model_dir
from lmforge.models import RecurrentLM
from lmforge.tasks import RunConfig
from lmforge.tasks.driver import train_task
from lmforge.tasks.registry import get_task

TEXT = "".join(f"{w} the {v} of {n}.\n" for n in range(40)
               for w, v in (("Speak", "love"), ("Hear", "king")))


def cfg_for(tmp_path, out: str, arch: str = "lstm", *extra: str) -> RunConfig:
    data = tmp_path / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    return RunConfig.load(None, [
        f"model.arch={arch}", f'out_dir="{tmp_path / out}"', f'data.path="{data}"',
        "model.d_model=24", "model.n_layer=2", "model.context_length=16",
        "train.max_steps=4", "train.batch_size=4", "train.eval_every=2",
        "train.checkpoint_every=2", "train.eval_batches=2", "train.warmup_steps=2",
        "train.progress=false", 'train.dtype="float32"', "model.dropout=0.1", *extra],
        preset="shakespeare-char")  # (its positional = "rope", n_head = 6 are ignored)


def test_lstm_trains_resumes_exactly_and_reloads(tmp_path):
    full = train_task(cfg_for(tmp_path, "full"))
    assert full.config.task == "causal-lm" and isinstance(full.model, RecurrentLM)
    assert full.result.step == 4 and full.result.val_loss is not None
    train_task(cfg_for(tmp_path, "part"), stop_at=2)
    resumed = train_task(cfg_for(tmp_path, "part"), resume=True)
    assert resumed.result.step == 4
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.result.val_loss == full.result.val_loss

    lm = load_model_dir(tmp_path / "full")
    assert isinstance(lm.model, RecurrentLM) and lm.config.arch == "lstm"
    assert all(torch.equal(v, a[k]) for k, v in lm.model.state_dict().items())
    # perplexity: one window over a short text = the cross-entropy of one forward pass
    ids = lm.tokenizer.encode(TEXT[:15]).ids
    x, y = torch.tensor([ids[:-1]]), torch.tensor(ids[1:])
    with torch.no_grad():
        ref = float(F.cross_entropy(lm.model(x)[0], y))
    got = perplexity(lm.model, ids, n_chars=15, n_bytes=15)
    assert got.loss == pytest.approx(ref, rel=1e-5)
    # generation past the training context: greedy, as re-reading the text each step
    out = generate(lm.model, x, GenerationConfig(max_new_tokens=20, temperature=0.0,
                                                 stop_at_eos=False))
    seq = x
    with torch.no_grad():
        for _ in range(20):
            seq = torch.cat([seq, lm.model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq[:, x.shape[1]:])


def test_cli_generate_and_eval_on_a_gru_directory(tmp_path, capsys):
    from lmforge.cli.generate import generate as cli_generate
    from lmforge.tasks.evaluate import evaluate_model_dir

    run = train_task(cfg_for(tmp_path, "gru", "gru", "train.max_steps=2"))
    assert run.config.model.arch == "gru"
    text = cli_generate(str(tmp_path / "gru"), "Speak", max_new_tokens=30, temperature=0.0,
                        stream=False, ignore_eos=True)[0]
    lm = load_model_dir(tmp_path / "gru")
    ids = torch.tensor([lm.tokenizer.encode("Speak").ids])
    ref = generate(lm.model, ids, GenerationConfig(max_new_tokens=30, temperature=0.0,
                                                   stop_at_eos=False))
    assert text == lm.tokenizer.decode(ref[0].tolist(), skip_special_tokens=False)
    data = tmp_path / "text.txt"
    figures = evaluate_model_dir(str(tmp_path / "gru"), [str(data)], say=lambda *a: None)
    assert figures["perplexity"] > 1


def test_task_defaults_and_refusals(tmp_path):
    assert get_task(cfg_for(tmp_path, "r", "rnn")).name == "causal-lm"
    assert get_task(RunConfig.load(None, [])).name == "causal-lm"  # a decoder, as before
    assert get_task(RunConfig.load(None, ["model.arch=encoder"])).name == "mlm"
    with pytest.raises(ConfigError, match="no task trains"):  # a classifier is not an LM
        get_task(cfg_for(tmp_path, "r", "lstm", 'model.heads="classifier"', "model.n_classes=2"))
    for extra, field in (("model.reversible=true", "model.reversible"),
                         ("model.bidirectional=true", "model.bidirectional"),
                         ("model.type_vocab_size=2", "model.type_vocab_size"),
                         ('train.activation_checkpointing="blocks"', "train.activation_checkpointing"),
                         ('train.parallel="fsdp"', "train.parallel"),
                         ('model.heads="classifier"', "model.heads")):
        extra = [extra, "model.n_classes=2"] if "classifier" in extra else [extra]
        with pytest.raises(ConfigError, match=field):
            train_task(cfg_for(tmp_path, "refused", "lstm", 'task="causal-lm"', *extra))
    assert not (tmp_path / "refused").exists()  # refused before anything is written
