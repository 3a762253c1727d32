"""Worker of tests/training/test_parallel.py (run directly, or under torchrun): trains a tiny
causal LM on a fixed global batch per step, each process on its slice, and rank 0 writes the
final weights (the whole model, gathered from the shards under FSDP) to OUT/final.safetensors.

    python parallel_worker.py OUT PARALLEL MAX_STEPS STOP_AT RESUME
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from lmforge.models import build_model
from lmforge.models.config import ModelConfig
from lmforge.objectives import causal_lm_loss
from lmforge.training.config import TrainConfig
from lmforge.training.distributed import init_distributed
from lmforge.training.sharded import full_model_state
from lmforge.training.trainer import Trainer

GLOBAL_BATCH, VOCAB, T = 8, 50, 16


def main(out: str, parallel: str, max_steps: int, stop_at: int, resume: bool) -> None:
    info = init_distributed("cpu")
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=VOCAB, d_model=32, n_layer=2, n_head=2,
                                    context_length=T, bias=False))  # (the gradient of a key
    # bias is zero up to rounding, which Adam would amplify into different updates)
    rows = GLOBAL_BATCH // info.world_size

    def batch(step, micro, rank):  # the same global batch whatever the number of processes
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.randint(0, VOCAB, (GLOBAL_BATCH, T + 1), generator=g)
        y = x[:, 1:].clone()
        y[::3, : T // 2] = -100  # uneven target counts across rows and processes
        mine = slice(rank * rows, (rank + 1) * rows)
        return x[mine, :-1], y[mine]

    cfg = TrainConfig(max_steps=max_steps, batch_size=rows, lr=1e-2, warmup_steps=0,
                      schedule="constant", weight_decay=0.0, dtype="float32", device="cpu",
                      eval_every=0, checkpoint_every=2, progress=False, parallel=parallel)
    trainer = Trainer(model, causal_lm_loss, batch, cfg, out, dist_info=info)
    trainer.fit(resume=resume, stop_at=stop_at or None)
    state = full_model_state(model) if trainer.sharded else model.state_dict()
    if info.is_main:
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()},
                  str(Path(out) / "final.safetensors"))


if __name__ == "__main__":
    out, parallel, steps, stop, resume = sys.argv[1:6]
    main(out, parallel, int(steps), int(stop), resume == "1")
