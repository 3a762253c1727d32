"""The training loop, shared by every objective.

The trainer knows nothing about the model family or the task: it gets a model, an objective
(``loss = objective(model, batch)``), a function that returns the batch for (step, micro-step),
and a function that yields validation batches. It owns the optimiser, schedule, precision,
gradient accumulation/clipping, evaluation, logging, checkpoints and exact resume.

SIGTERM and SIGINT during :meth:`Trainer.fit` stop training at the next step boundary with a
checkpoint (:mod:`lmforge.training.signals`); leftovers of killed runs' writes are swept from
the run and checkpoint directories when training starts or resumes.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import CheckpointError, TrainingError
from ..files.atomic import sweep_stale_temporaries
from .accumulate import micro_weights
from .checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .distributed import DistInfo, barrier, broadcast_flag, init_distributed, resolve_device
from .early_stopping import EarlyStopping
from .host_memory import set_host_memory
from .metrics import MetricsLog
from .optim import lr_at, make_optimizer
from .parallel import (apply_activation_checkpointing, compile_model, gradient_sync, shard_model,
                       wrap_ddp)
from .precision import autocast_dtype
from .sharded import full_model_state, list_sharded, load_sharded, save_sharded
from .signals import StopSignals, exit_code

Batch = object
Objective = Callable[[nn.Module, Batch], torch.Tensor]


@dataclass
class TrainResult:
    step: int
    train_loss: float
    val_loss: float | None
    best_val_loss: float | None
    tokens: int
    elapsed_s: float
    tokens_per_s: float
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)
    stopped_by: str | None = None
    """The signal (``"SIGTERM"``, ``"SIGINT"``) that stopped training before max_steps, after
    saving a checkpoint; None when it was not stopped so."""

    @property
    def exit_code(self) -> int:
        """0, or 128 + the number of the signal that stopped the run (as a shell reports it)."""
        return exit_code(self.stopped_by)


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        train_batch: Callable[[int, int, int], Batch],  # (step, micro_step, rank) -> batch
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        eval_batches: Callable[[], Iterable[Batch]] | None = None,
        tokens_per_batch: int = 0,
        on_save: Callable[[nn.Module, dict], None] | None = None,
        dist_info: DistInfo | None = None,
        evaluate_fn: Callable[[nn.Module], dict] | None = None,
        early_stopping: EarlyStopping | None = None,
        on_best: Callable[[nn.Module, dict], None] | None = None,
    ):
        """``evaluate_fn(model) -> {"loss": ..., other metrics}`` replaces the mean objective
        over ``eval_batches`` as the evaluation (run in eval mode, without gradients); its
        numbers are logged with the validation loss. ``early_stopping`` watches one of them:
        ``on_best(model, summary)`` runs at each new best, and running out of patience ends
        training (saved, ``stopped_early``); its state is part of the checkpoints."""
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.dist = dist_info or init_distributed("cuda" if cfg.device.startswith("cuda") or
                                                  (cfg.device == "auto" and torch.cuda.is_available()) else "cpu")
        self.device = resolve_device(cfg.device, self.dist)
        self.model = model.to(self.device)
        self.objective = objective
        self.train_batch = train_batch
        self.eval_batches = eval_batches
        self.tokens_per_step = tokens_per_batch * cfg.grad_accum * self.dist.world_size
        self.on_save = on_save
        self.evaluate_fn = evaluate_fn
        self.early_stopping = early_stopping
        self.on_best = on_best
        self.dtype = autocast_dtype(cfg.dtype, self.device)
        set_host_memory(cfg.host_memory)
        apply_activation_checkpointing(model, cfg.activation_checkpointing)
        self.sharded = self.dist.enabled and cfg.parallel == "fsdp"  # (DCP checkpoints)
        self._plain_copy = copy.deepcopy(model).cpu() if self.sharded and self.dist.is_main \
            and (on_save or on_best) is not None else None  # (rank 0 writes model dirs from it)
        if self.sharded:
            shard_model(model, self.dtype, cfg.fsdp_cpu_offload)
        self.optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                        cfg.layer_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.train_model = wrap_ddp(model, self.device) if self.dist.enabled and not self.sharded \
            else model
        if cfg.compile:
            self.train_model = compile_model(self.train_model, self._compile_probe)
        self.step = 0
        self.tokens = 0
        self.elapsed = 0.0
        self.best_val: float | None = None
        self.last_val: float | None = None
        self.saved: tuple[int, Path | None] | None = None
        """(step, path) of the last checkpoint saved (path None on ranks other than the main
        one: every rank knows the step, so they agree on whether to save again)."""

    def _compile_probe(self, compiled: nn.Module) -> None:
        """One forward and backward pass of the compiled model on the first batch (compiling
        it), with the RNG and the gradients left as they were."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            batch = _to_device(self.train_batch(0, 0, self.dist.rank), self.device)
            with self.autocast():
                loss = self.objective(compiled, batch)
            loss.backward()
        self.optimizer.zero_grad(set_to_none=True)

    # -- precision ---------------------------------------------------------------------------
    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self, weights: bool = True) -> dict:
        """The whole training state; ``weights=False``: without model and optimiser (a sharded
        checkpoint stores those itself)."""
        big = {"model": self.model.state_dict(),
               "optimizer": self.optimizer.state_dict()} if weights else {}
        return {"step": self.step, **big, "scaler": self.scaler.state_dict(),
                "rng": rng_state(), "tokens": self.tokens, "elapsed": self.elapsed,
                "best_val": self.best_val, "last_val": self.last_val,
                "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None}

    def load_state_dict(self, state: dict, model_loaded: bool = False) -> None:
        if not model_loaded:  # (a sharded checkpoint has loaded model and optimiser itself)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])  # (a malformed one is a CheckpointError)
        self.step, self.tokens = state["step"], state["tokens"]
        self.elapsed, self.best_val = state["elapsed"], state["best_val"]
        self.last_val = state.get("last_val")
        if self.early_stopping is not None and state.get("early_stopping"):
            self.early_stopping.load_state_dict(state["early_stopping"])

    def save(self) -> Path | None:
        if self.sharded:
            return self._save_sharded()
        if not self.dist.is_main:
            self.saved = (self.step, None)
            return None
        path = save_checkpoint(self.ckpt_dir, self.step, self.state_dict(), self.cfg.keep_checkpoints)
        self.saved = (self.step, path)
        if self.on_save is not None:
            self.on_save(self.model, self.summary())
        return path

    def _save_sharded(self) -> Path | None:
        """FSDP: every rank writes its shards; rank 0 gathers the whole model into its plain
        copy and writes the model directory from it (``on_save``)."""
        path = save_sharded(self.ckpt_dir, self.step, self.model, self.optimizer,
                            self.state_dict(weights=False),
                            is_main=self.dist.is_main, barrier=lambda: barrier(self.dist),
                            keep=self.cfg.keep_checkpoints)
        self.saved = (self.step, path if self.dist.is_main else None)
        if self.on_save is not None:
            self._with_whole_model(self.on_save, self.summary())
        return self.saved[1]

    def _with_whole_model(self, fn: Callable[[nn.Module, dict], None], summary: dict) -> None:
        """``fn(model, summary)`` on rank 0 with the whole model: under FSDP every rank joins
        in gathering the shards into rank 0's plain copy of the model."""
        if not self.sharded:
            if self.dist.is_main:
                fn(self.model, summary)
            return
        full = full_model_state(self.model)
        if self._plain_copy is not None:
            self._plain_copy.load_state_dict(full)
            fn(self._plain_copy, summary)

    def resume(self) -> bool:
        """Load the newest checkpoint; False when there is none. A checkpoint that does not fit
        this run (other shapes, a malformed state) is a CheckpointError naming it."""
        path = latest_checkpoint(self.ckpt_dir)
        sharded = list_sharded(self.ckpt_dir)
        if sharded and (path is None or sharded[-1][1].stem >= path.stem):  # (same digits)
            path = sharded[-1][1]  # written by FSDP; resharded onto this run's processes
        if path is None:
            return False
        state = None if path.suffix == ".dcp" else load_checkpoint(path)
        try:
            if state is None:
                state = load_sharded(path, self.model, self.optimizer)
                self.load_state_dict(state, model_loaded=True)
            else:
                self.load_state_dict(state)
        except CheckpointError as e:
            raise CheckpointError(f"checkpoint {path}: {e}") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            raise CheckpointError(
                f"checkpoint {path} does not fit this run ({why}); resume with the config that "
                "wrote it, or start again without --resume") from None
        return True

    def summary(self) -> dict:
        return {"step": self.step, "tokens": self.tokens, "elapsed_s": round(self.elapsed, 2),
                "val_loss": self.last_val, "best_val_loss": self.best_val}

    # -- evaluation --------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float | None:
        if self.eval_batches is None:
            return None
        was_training = self.model.training
        self.model.eval()
        total, n = 0.0, 0
        for batch in self.eval_batches():
            with self.autocast():
                total += float(self.objective(self.model, _to_device(batch, self.device)))
            n += 1
        self.model.train(was_training)
        return total / n if n else None

    def evaluate_metrics(self) -> dict | None:
        """The evaluation: ``evaluate_fn``'s metrics, else {"loss": :meth:`evaluate`}."""
        if self.evaluate_fn is None:
            val = self.evaluate()
            return None if val is None else {"loss": val}
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad(), self.autocast():
            metrics = dict(self.evaluate_fn(self.model))
        self.model.train(was_training)
        return metrics

    def _after_eval(self, metrics: dict, log: MetricsLog | None) -> bool:
        """Record an evaluation; True when early stopping says stop."""
        val = metrics.get("loss")
        if val is not None:
            self.last_val = val
            self.best_val = val if self.best_val is None else min(self.best_val, val)
        if log is not None:
            extra = {k: v for k, v in metrics.items()
                     if k != "loss" and isinstance(v, (int, float))}
            log.log(step=self.step, split="val", loss=val, tokens=self.tokens,
                    elapsed_s=round(self.elapsed, 2), **extra)
        es = self.early_stopping
        if es is None:
            return False
        if es.update(self.step, metrics) and self.on_best is not None:
            self._with_whole_model(self.on_best, {**self.summary(), "eval": metrics})
        return es.should_stop

    # -- the loop ----------------------------------------------------------------------------
    def _set_lr(self) -> float:
        cfg = self.cfg
        lr = lr_at(self.step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps,
                   max_steps=cfg.max_steps, schedule=cfg.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def _train_step(self, bar) -> float:
        """One optimiser step over ``grad_accum`` micro-batches; returns the training loss. A
        non-finite loss stops training with a TrainingError naming the last good checkpoint."""
        cfg = self.cfg
        loss_sum = torch.zeros((), device=self.device)
        batches = [_to_device(self.train_batch(self.step, micro, self.dist.rank), self.device)
                   for micro in range(cfg.grad_accum)]
        weights, report = micro_weights(batches, self.dist, self.device)  # by target tokens
        for micro, batch in enumerate(batches):
            with gradient_sync(self.train_model, micro == cfg.grad_accum - 1, self.dist):
                with self.autocast():
                    loss = self.objective(self.train_model, batch)
                self.scaler.scale(loss * weights[micro]).backward()
            loss_sum += loss.detach().float() * report[micro]
        train_loss = float(loss_sum)
        if not math.isfinite(train_loss):
            if bar is not None:
                bar.close()
            last = latest_checkpoint(self.ckpt_dir)
            where = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
            raise TrainingError(
                f"the training loss became {train_loss} at step {self.step + 1}: training "
                f"diverged. Lower train.lr (now {cfg.lr:g}) or set train.grad_clip "
                f"(now {cfg.grad_clip:g}); {where}, untouched")
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += self.tokens_per_step
        return train_loss

    def _progress_bar(self):
        if not (self.cfg.progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm  # (imported only when a bar is shown)

        return tqdm(total=self.cfg.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
                    desc="train")

    def _eval_and_save(self, log: MetricsLog | None, last_step: bool, out_of_time: bool) -> bool:
        """Evaluate and write a checkpoint when one is due; True when early stopping says stop."""
        cfg, stop = self.cfg, False
        if (cfg.eval_every and self.step % cfg.eval_every == 0) or last_step or out_of_time:
            if self.dist.is_main or self.sharded:  # (a sharded forward needs every rank)
                metrics = self.evaluate_metrics()
                stop = metrics is not None and self._after_eval(metrics, log)
            stop = broadcast_flag(stop, self.dist, self.device)
            barrier(self.dist)
        if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or last_step \
                or out_of_time or stop:
            self.save()
            barrier(self.dist)
        return stop

    def _log_train(self, log: MetricsLog | None, bar, window: list, loss: float, lr: float,
                   last_step: bool) -> None:
        """Log the training loss (every ``log_every`` steps and at the end); ``window`` is
        [start time, tokens since] of the throughput measurement, reset here."""
        if not (self.step % self.cfg.log_every == 0 or last_step):
            return
        now = time.perf_counter()
        tps = window[1] / max(now - window[0], 1e-9)
        window[:] = [now, 0]
        if log is not None:
            log.log(step=self.step, split="train", loss=loss, lr=lr, tokens=self.tokens,
                    tokens_per_s=round(tps, 1), elapsed_s=round(self.elapsed, 2))
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}",
                            val=f"{self.last_val:.4f}" if self.last_val is not None else "-")

    def _stop_for_signal(self, name: str) -> str:
        """Save a checkpoint of this step (unless one was just written); the stop message."""
        if self.saved is None or self.saved[0] != self.step:
            self.save()
            barrier(self.dist)
        where = self.saved[1] if self.saved is not None and self.saved[1] else self.ckpt_dir
        return f"stopped by {name} at step {self.step}; checkpoint {where}; resume with --resume"

    def sweep(self) -> None:
        """Remove what killed runs' interrupted writes left in the run directories."""
        if self.dist.is_main:
            for directory in (self.out_dir, self.ckpt_dir):
                sweep_stale_temporaries(directory)

    def fit(self, resume: bool = False, stop_at: int | None = None) -> TrainResult:
        """Train to ``cfg.max_steps`` (or ``stop_at``, for tests that simulate a kill).

        SIGTERM/SIGINT (main thread) end training at the next step boundary: a checkpoint is
        saved, a one-line message goes to stderr and the result has ``stopped_by`` set."""
        cfg = self.cfg
        self.sweep()
        if resume:
            self.resume()
        log = MetricsLog(self.out_dir, resume_step=self.step if resume else None) \
            if self.dist.is_main else None
        bar = self._progress_bar()
        self.model.train()
        end = min(cfg.max_steps, stop_at or cfg.max_steps)
        t_start, window = time.perf_counter(), [time.perf_counter(), 0]
        elapsed0 = self.elapsed
        train_loss, stopped_early, stopped_by, message = math.nan, False, None, ""
        with StopSignals(announce=self.dist.is_main) as signals:
            while self.step < end:
                lr = self._set_lr()
                train_loss = self._train_step(bar)
                window[1] += self.tokens_per_step
                self.elapsed = elapsed0 + time.perf_counter() - t_start
                last_step = self.step == cfg.max_steps
                self._log_train(log, bar, window, train_loss, lr, last_step)
                if bar is not None:
                    bar.update(1)
                out_of_time = cfg.max_minutes > 0 and self.elapsed >= cfg.max_minutes * 60
                stop = self._eval_and_save(log, last_step, out_of_time)
                if (out_of_time or stop) and not last_step:
                    stopped_early = True
                    break
                if broadcast_flag(signals.received is not None, self.dist, self.device) \
                        and not last_step:
                    stopped_by = signals.received or "SIGTERM"  # (another rank's signal)
                    message = self._stop_for_signal(stopped_by)
                    break
        if bar is not None:
            bar.close()
        if message and self.dist.is_main:
            print(message, file=sys.stderr, flush=True)
        return TrainResult(
            step=self.step, train_loss=train_loss, val_loss=self.last_val,
            best_val_loss=self.best_val, tokens=self.tokens, elapsed_s=self.elapsed,
            tokens_per_s=self.tokens / self.elapsed if self.elapsed else 0.0,
            stopped_early=stopped_early, history=log.rows if log is not None else [],
            stopped_by=stopped_by,
        )
