"""Supervised instruction tuning of a pretrained causal LM: full, LoRA or QLoRA (``task =
"sft"``; the ``[sft]`` table is :class:`~lmforge.tasks.sft_config.SFTConfig`).

The base model directory (``sft.init_from``) is loaded, optionally quantised to NF4 and given
LoRA adapters (injected by module name; the model code does not change), and trained on chat
data with the loss on assistant tokens only, through the shared driver
(:func:`~lmforge.tasks.driver.train_task`: run.toml is written, so ``--resume`` is checked
against the run it continues). LoRA/QLoRA runs write a small adapter directory
(``OUT_DIR/adapter``) plus a merged model directory (QLoRA: the adapter merged into the
full-precision base); full runs write a model directory. LoRA/QLoRA checkpoints hold only the
adapters and the optimiser state (:class:`~lmforge.finetune.checkpoint.AdapterTrainer`).

The model directory keeps the base's generation settings (stop tokens, BOS, sampling) and the
chat template the conversations were rendered with, so `lmforge chat` on it talks as the base
does (:func:`~lmforge.tasks.sft_data.sft_generation`). Batches are padded with the base's pad
token (:func:`~lmforge.tasks.sft_data.sft_pad_id`).

With ``sft.general_text`` the perplexity of that general text is measured before and after
(:mod:`lmforge.evaluation.forgetting`): how much the fine-tuning cost the model elsewhere.
"""

from __future__ import annotations

import math

from ..config import to_dict
from ..data.chat import builtin_instructions_path, load_sft_data, pack_examples
from ..errors import ConfigError
from ..evaluation.forgetting import (compare_perplexity, format_forgetting, general_perplexity,
                                     read_text)
from ..finetune import (base_fingerprint, inject_lora, load_model_dir_nf4, load_with_adapter,
                        merge_lora, save_adapter)
from ..finetune.checkpoint import AdapterTrainer
from ..inference.chat_template import find_chat_template
from ..modeldir import load_model_dir, save_model_dir
from ..modeldir.directory import read_meta, update_meta
from ..modeldir.meta import ModelMeta, Source, meta_to_dict
from ..objectives.sft import sft_loss
from ..training import Trainer
from .config import RunConfig
from .driver import RunState, train_task
from .registry import Task, TaskData, register
from .sft_config import SFTConfig
from .sft_data import (heldout_batches, heldout_loss, sft_generation, sft_pad_id,
                       sft_train_batches, split_heldout)
from .steps import TrainRun

ADAPTER_DIR = "adapter"
ADAPTER_META = ("task", "base", "sft", "report", "training", "data")
"""The meta.json fields an adapter directory keeps (under ``"sft"``)."""
PEFT_MODES = ("lora", "qlora")

__all__ = ["SFTConfig", "SFTTask", "heldout_loss", "sft_pad_id", "train_sft"]


class SFTTask(Task):
    """``task = "sft"``: the steps of its own; ``run.state`` carries the loaded base, the
    general text and its perplexity before, the held-out examples, the pad id, the report."""

    name = "sft"
    summary = "instruction-tune a pretrained causal LM (full, LoRA, QLoRA)"
    section, config = "sft", SFTConfig
    archs = ()  # the model is the base's (sft.init_from), [model] is not read
    objective = staticmethod(sft_loss)

    def check(self, cfg: RunConfig) -> None:
        if not cfg.sft.init_from:
            raise ConfigError("sft.init_from is empty: set it to the model directory to fine-tune "
                              "(for example one written by `lmforge import`)")

    def tokenizer(self, run: RunState):
        """Load the base (qlora: quantised to NF4 while read: its full-precision matrices are
        never all resident) into ``run.state`` and return its tokenizer. With qlora and
        ``sft.general_text``, the full-precision base scores the text first and is freed."""
        s, st = run.cfg.sft, run.state
        st["general"] = read_text(s.general_text, s.general_max_chars) if s.general_text else None
        st["ppl_before"] = st["nf4"] = None
        if s.mode == "qlora":
            if st["general"] is not None:  # scored in full precision, before any change
                fp = load_model_dir(s.init_from)
                st["ppl_before"] = general_perplexity(fp.model.float(), fp.tokenizer, st["general"])
                del fp
            base, st["nf4"] = load_model_dir_nf4(s.init_from)
        else:
            base = load_model_dir(s.init_from)
        st["base"], st["base_meta"] = base, read_meta(s.init_from)
        st["model"] = base.model.float().train()
        return base.tokenizer

    def fit_vocab(self, run: RunState) -> int:
        """The base's vocabulary size; the config is not changed ([model] is not read)."""
        return run.tokenizer.get_vocab_size(with_added_tokens=True)

    def prepare(self, run: RunState) -> TaskData:
        """Chat data (the base's template unless ``sft.template``), the held-out split,
        packing, the pad id, and the forgetting baseline (the general text's perplexity)."""
        cfg, s, st, tok = run.cfg, run.cfg.sft, run.state, run.tokenizer
        st["template"] = s.template or find_chat_template(s.init_from)
        paths = ([s.data] if isinstance(s.data, str) else list(s.data)) if s.data else \
            [str(builtin_instructions_path())]
        max_len = min(s.max_length, st["base"].config.context_length)
        data = load_sft_data(paths, tok, st["template"], max_length=max_len)
        val, train = split_heldout(data.examples, s.val_fraction)
        if s.pack:
            train = pack_examples(train, max_len)
        st["val"], st["pad_id"] = val, sft_pad_id(tok, st["base_meta"])
        if st["general"] is not None and st["ppl_before"] is None:
            st["ppl_before"] = general_perplexity(st["model"], tok, st["general"])
        B, pad_id = cfg.train.batch_size, st["pad_id"]
        return TaskData(
            train_batch=sft_train_batches(train, B, pad_id, cfg.seed, cfg.train.grad_accum,
                                          lambda: run.world_size),
            tokens_per_batch=B * s.max_length,
            eval_batches=(lambda: heldout_batches(val, B, pad_id)) if val else None,
            meta={"paths": [str(p) for p in paths], "train_examples": len(train),
                  "val_examples": len(val), "dropped": data.dropped})

    def build_model(self, run: RunState):
        """The base, with LoRA adapters for lora/qlora (the driver has just seeded torch: the
        adapters start as the seed says); measures the held-out loss before training."""
        s, st = run.cfg.sft, run.state
        model, nf4 = st["model"], st["nf4"]
        st["fingerprint"] = base_fingerprint(model)  # an NF4 model has its full-precision base's
        report: dict = {"mode": s.mode,
                        "total_params": st["base"].model.num_params() + (nf4.params if nf4 else 0)}
        if nf4 is not None:
            report["nf4_bytes_per_param"] = round(nf4.bytes_per_param, 4)
        if s.mode in PEFT_MODES:
            lr = inject_lora(model, s.lora, where="sft.lora")  # errors name the [sft.lora] fields
            report.update(trainable_params=lr.trainable_params, trainable_share=lr.trainable_share)
        else:
            report.update(trainable_params=sum(p.numel() for p in model.parameters()),
                          trainable_share=1.0)
        st["report"] = report
        st["loss_before"] = heldout_loss(model, st["val"], run.cfg.train.batch_size, st["pad_id"])
        return model

    def meta(self, run: RunState) -> dict:
        s, st = run.cfg.sft, run.state
        out = {"task": "sft", "base": str(s.init_from), "sft": to_dict(s), "report": st["report"],
               "tokenizer": {"path": str(s.init_from), "vocab_size": run.vocab}}
        generation = sft_generation(st["base_meta"], st["template"])
        if generation:
            out["generation"] = generation
        return out

    def save(self, run: RunState, model, meta) -> None:
        """full: the model directory; lora/qlora: the adapter directory (the merged model
        directory is written once, at the end)."""
        if run.cfg.sft.mode == "full":
            save_model_dir(run.out, model, run.tokenizer, meta)
        else:
            save_adapter(model, run.out / ADAPTER_DIR, fingerprint=run.state["fingerprint"],
                         meta={"sft": {k: v for k, v in meta_to_dict(meta).items()
                                       if k in ADAPTER_META}})

    def make_trainer(self, run: RunState, model, data: TaskData, on_save):
        """A Trainer (full) or an AdapterTrainer (lora/qlora: checkpoints of adapters only)."""
        trainer_cls = Trainer if run.cfg.sft.mode == "full" else AdapterTrainer
        return trainer_cls(model, self.make_objective(run), data.train_batch,
                           data.train_config or run.cfg.train, run.out,
                           tokens_per_batch=data.tokens_per_batch, on_save=on_save,
                           eval_batches=data.eval_batches)

    def finish(self, run: RunState, trainer, train_run: TrainRun) -> None:
        """The held-out loss after, forgetting, and for lora/qlora the merged model directory;
        ``metrics``: heldout_loss_before/after, the parameter report, general_ppl_*."""
        s, st, model = run.cfg.sft, run.state, train_run.model
        after = heldout_loss(model, st["val"], run.cfg.train.batch_size, st["pad_id"])
        metrics = {"heldout_loss_before": st["loss_before"], "heldout_loss_after": after,
                   **st["report"]}
        forgetting = None
        if st["general"] is not None:
            forgetting = compare_perplexity(st["ppl_before"],
                                            general_perplexity(model, run.tokenizer, st["general"]))
            forgetting["text"] = s.general_text
            metrics.update(general_ppl_before=forgetting["ppl_before"],
                           general_ppl_after=forgetting["ppl_after"],
                           general_ppl_change=forgetting["change"])
        extra = {"forgetting": forgetting} if forgetting else {}
        if s.mode in PEFT_MODES:
            self._save_merged(run, model, {"metrics": metrics, **extra,
                                           "training": trainer.summary()})
        else:
            update_meta(run.out, metrics=metrics, **extra)
        train_run.metrics = {k: v for k, v in metrics.items() if v is not None
                             and not (isinstance(v, float) and math.isnan(v))}
        train_run.report = format_forgetting(forgetting) if forgetting else ""

    def _save_merged(self, run: RunState, model, fields: dict) -> None:
        """The merged model directory every command can use (lora: the adapted model merged;
        qlora: the adapter merged into the full-precision base), with the base's generation
        settings and chat template."""
        s, st = run.cfg.sft, run.state
        meta = ModelMeta(task="sft", base=str(s.init_from), source=Source(
            kind="merged", base=str(s.init_from), adapter=str(run.out / ADAPTER_DIR),
            origin=st["base_meta"].source)).with_fields(**fields)
        if s.mode == "lora":
            merged = merge_lora(model)
        else:  # the adapter merged into the full-precision base, read tensor by tensor (a
            # dtype read is never memory-mapped: a mapped file's pages and their merged
            # copies would both count)
            merged = load_with_adapter(s.init_from, run.out / ADAPTER_DIR, dtype="float32").model
        generation = sft_generation(st["base_meta"], st["template"])
        if generation:
            meta = meta.with_fields(generation=generation)
        save_model_dir(run.out, merged, run.tokenizer, meta)


register(SFTTask())


def train_sft(cfg: RunConfig, **kw) -> TrainRun:
    """Instruction-tune ``cfg.sft.init_from`` as ``cfg.sft`` says: :func:`~lmforge.tasks.
    train_task` with ``task = "sft"`` (``resume``, ``overwrite``, ``stop_at`` go to it). Returns
    the run with ``metrics`` (held-out loss before/after, trainable share, forgetting)."""
    cfg.task = SFTTask.name
    return train_task(cfg, **kw)
