"""`lmforge quickstart`: the whole path in one command, offline, in a few minutes on a CPU.

Trains a byte-level BPE tokenizer and a small GPT on real text already on the machine (the
Python standard library's own source code, or ``--data``), shows progress, evaluates on the
held-out tail, saves the model directory and prints samples.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

from ..config import apply_overrides, from_dict
from ..data import describe_stdlib_corpus, stdlib_corpus_files
from ..inference import GenerationConfig, generate_text
from ..tokenizers import eos_token_id
from .config import RunConfig
from .lm import train_lm

QUICKSTART = {
    "model": {"d_model": 192, "n_layer": 4, "n_head": 6, "context_length": 128,
              "positional": "rope", "bias": False},
    "tokenizer": {"kind": "bpe", "vocab_size": 2048},
    "data": {"val_fraction": 0.05},
    "train": {"max_steps": 1000, "batch_size": 24, "lr": 2e-3, "min_lr": 1e-4,
              "warmup_steps": 60, "eval_every": 250, "checkpoint_every": 250,
              "eval_batches": 16},
}


def quickstart(data: str | None = None, out_dir: str = "runs/quickstart", steps: int | None = None,
               prompt: str | None = None, samples: int = 2, seed: int = 1337,
               overrides: list[str] | None = None, say=print, overwrite: bool = False) -> dict:
    """Train, evaluate and sample; an earlier run's checkpoints in ``out_dir`` are refused
    (as ``lmforge train`` does) unless ``overwrite``."""
    if data:
        paths, what = [data], f"your data: {data}"
    else:
        files = stdlib_corpus_files()
        paths, what = [str(f) for f in files], describe_stdlib_corpus(files)
    d = copy.deepcopy(QUICKSTART)
    d.update(out_dir=out_dir, seed=seed)
    d["data"]["path"] = paths
    if steps:
        d["train"]["max_steps"] = steps
    apply_overrides(d, overrides or [])
    cfg = from_dict(RunConfig, d)
    say(f"lmforge quickstart: training a {cfg.model.n_layer}-layer GPT on {what}")
    run = train_lm(cfg, overwrite=overwrite)
    r = run.result
    if r.exit_code:  # stopped by a signal: the checkpoint is saved, no samples
        return {"result": r, "samples": [], "out_dir": str(run.out_dir), "plot": None}
    say("")
    say(f"trained {r.step} steps on {r.tokens:,} tokens in {r.elapsed_s:.0f} s "
        f"({r.tokens_per_s:,.0f} tokens/s)")
    if r.val_loss is not None:
        say(f"held-out loss {r.val_loss:.3f} nats/token, perplexity {math.exp(r.val_loss):.1f} "
            f"(best {r.best_val_loss:.3f})")
    model = run.model.eval()
    prompt = prompt if prompt is not None else ("def " if not data else "\n")
    texts = []
    for i in range(samples):
        g = GenerationConfig(max_new_tokens=160, temperature=0.8, top_k=50, seed=seed + i)
        text = generate_text(model, run.tokenizer, prompt, g, eos_token_id(run.tokenizer))
        texts.append(text)
        say(f"\n--- sample {i + 1} (prompt {prompt!r}) ---\n{prompt}{text}")
    out = Path(run.out_dir)
    say("")
    say(f"model directory  {out}  (config.json, model.safetensors, tokenizer.json, meta.json)")
    say(f"loss curve       {run.plot}")
    say(f"metrics          {out / 'metrics.jsonl'}")
    say(f"next: lmforge generate {out} --prompt \"def \"   |   lmforge info {out}")
    return {"result": r, "samples": texts, "out_dir": str(out), "plot": str(run.plot)}
