"""Supervised instruction tuning of a pretrained causal LM: full, LoRA or QLoRA.

The base model directory is loaded, optionally quantised to NF4 and given LoRA adapters
(injected by module name; the model code does not change), and trained on chat data with the
loss on assistant tokens only. LoRA/QLoRA runs write a small adapter directory
(``OUT_DIR/adapter``) plus a merged model directory (QLoRA: the adapter merged into the
full-precision base); full runs write a model directory. LoRA/QLoRA checkpoints hold only the
adapters and the optimiser state (:class:`~lmforge.finetune.checkpoint.AdapterTrainer`).

With ``sft.general_text`` the perplexity of that general text is measured before and after
(:mod:`lmforge.evaluation.forgetting`): how much the fine-tuning cost the model elsewhere.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..config import to_dict
from ..errors import ConfigError
from ..evaluation.forgetting import (compare_perplexity, format_forgetting, general_perplexity,
                                     read_text)
from ..finetune import (LoRAConfig, base_fingerprint, builtin_instructions_path,
                        find_chat_template, inject_lora, load_model_dir_nf4, load_sft_data,
                        merge_lora, save_adapter, sft_batches, sft_loss)
from ..finetune.checkpoint import AdapterTrainer
from ..finetune.sft import collate
from ..io import load_model_dir, save_model_dir
from ..io.model_dir import update_meta
from ..training import RunConfig, Trainer
from ..training.checkpoint import list_checkpoints
from ..viz import plot_loss_curve
from .common import TrainRun


@torch.no_grad()
def heldout_loss(model, examples, batch_size: int, pad_id: int) -> float | None:
    """Mean assistant-token loss over ``examples`` (eval mode)."""
    if not examples:
        return None
    was = model.training
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(examples), batch_size):
        ids, labels, mask = collate(examples[i:i + batch_size], pad_id)
        k = int((labels[:, 1:] != -100).sum())
        total += float(sft_loss(model, (ids, labels, mask))) * k
        n += k
    model.train(was)
    return total / n if n else None


def train_sft(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
              stop_at: int | None = None) -> TrainRun:
    s = cfg.sft
    if not s.init_from:
        raise ConfigError("sft.init_from is empty: set it to the model directory to fine-tune "
                          "(for example one written by `lmforge import`)")
    out = Path(cfg.out_dir)
    if not resume and list_checkpoints(out / "checkpoints"):
        if not overwrite:
            raise ConfigError(f"{out} already holds checkpoints of an earlier run; pass --resume "
                              "or --overwrite, or choose another out_dir")
        import shutil

        shutil.rmtree(out / "checkpoints")
    torch.manual_seed(cfg.seed)  # the adapters' initialisation, dropout
    general, ppl_before, nf4 = None, None, None
    if s.general_text:  # scored by the base model in full precision, before any change
        general = read_text(s.general_text, s.general_max_chars)
        if s.method == "qlora":
            fp = load_model_dir(s.init_from)
            ppl_before = general_perplexity(fp.model.float(), fp.tokenizer, general)
            del fp
    if s.method == "qlora":  # quantised while read: the fp32 matrices are never all resident
        base, nf4 = load_model_dir_nf4(s.init_from)
    else:
        base = load_model_dir(s.init_from)
    model, tok = base.model.float().train(), base.tokenizer
    template = s.template or find_chat_template(s.init_from)
    paths = s.data or [str(builtin_instructions_path())]
    data = load_sft_data(paths, tok, template, max_length=min(s.max_length, base.config.context_length))
    examples = data.examples
    n_val = int(len(examples) * s.val_fraction)
    val, train = examples[:n_val], examples[n_val:]
    if not train:
        raise ConfigError(f"sft: no training conversations left after holding out {n_val}")
    if s.pack:
        from ..finetune import pack_examples

        train = pack_examples(train, min(s.max_length, base.config.context_length))
    pad_id = 0
    fingerprint = base_fingerprint(model)  # an NF4 model has its full-precision base's
    if general is not None and ppl_before is None:
        ppl_before = general_perplexity(model, tok, general)
    report: dict = {"method": s.method,
                    "total_params": base.model.num_params() + (nf4.params if nf4 else 0)}
    if nf4 is not None:
        report["nf4_bytes_per_param"] = round(nf4.bytes_per_param, 4)
    if s.method in ("lora", "qlora"):
        lcfg = LoRAConfig(rank=s.lora_rank, alpha=s.lora_alpha, dropout=s.lora_dropout,
                          targets=tuple(s.lora_targets))
        try:
            lr = inject_lora(model, lcfg)
        except ConfigError as e:  # name the [sft] fields
            raise ConfigError(str(e).replace("lora.", "sft.lora_")) from None
        report.update(trainable_params=lr.trainable_params, trainable_share=lr.trainable_share)
    else:
        report.update(trainable_params=sum(p.numel() for p in model.parameters()), trainable_share=1.0)
    before = heldout_loss(model, val, cfg.train.batch_size, pad_id)
    out.mkdir(parents=True, exist_ok=True)

    def on_save(m, summary: dict) -> None:
        meta = {"task": "sft", "base": str(s.init_from), "sft": to_dict(s), "report": report,
                "training": summary, "data": {"paths": [str(p) for p in paths],
                                              "train_examples": len(train), "val_examples": len(val),
                                              "dropped": data.dropped}}
        if s.method == "full":
            save_model_dir(out, m, tok, meta)
        else:
            save_adapter(m, out / "adapter", fingerprint=fingerprint, meta={"sft": meta})

    trainer_cls = Trainer if s.method == "full" else AdapterTrainer
    trainer = trainer_cls(model, sft_loss,
                          sft_batches(train, cfg.train.batch_size, pad_id, seed=cfg.seed,
                                      grad_accum=cfg.train.grad_accum),
                          cfg.train, out, tokens_per_batch=cfg.train.batch_size * s.max_length,
                          on_save=on_save,
                          eval_batches=(lambda: (collate(val[i:i + cfg.train.batch_size], pad_id)
                                                 for i in range(0, len(val), cfg.train.batch_size)))
                          if val else None)
    result = trainer.fit(resume=resume, stop_at=stop_at)
    if result.step < cfg.train.max_steps and not result.stopped_early:
        # interrupted (stop_at): the last checkpoint is the state to resume from
        return TrainRun(out, result, cfg, tok, model, None, metrics={})
    after = heldout_loss(model, val, cfg.train.batch_size, pad_id)
    metrics = {"heldout_loss_before": before, "heldout_loss_after": after, **report}
    forgetting = None
    if general is not None:
        forgetting = compare_perplexity(ppl_before, general_perplexity(model, tok, general))
        forgetting["text"] = s.general_text
        metrics.update(general_ppl_before=forgetting["ppl_before"],
                       general_ppl_after=forgetting["ppl_after"],
                       general_ppl_change=forgetting["change"])
    extra = {"forgetting": forgetting} if forgetting else {}
    if s.method == "lora":  # also a merged model directory that every command can use
        save_model_dir(out, merge_lora(model), tok, {"task": "sft", "base": str(s.init_from),
                                                     "metrics": metrics, **extra,
                                                     "training": trainer.summary()})
    elif s.method == "qlora":  # the adapter merged into the full-precision base
        merged = load_model_dir(s.init_from, adapter=out / "adapter").model
        save_model_dir(out, merged, tok, {"task": "sft", "base": str(s.init_from),
                                          "merged_into": "the full-precision base",
                                          "metrics": metrics, **extra,
                                          "training": trainer.summary()})
    else:
        update_meta(out, metrics=metrics, **extra)
    plot = plot_loss_curve(result.history, out / "loss.png", title=f"{out.name}: SFT loss") \
        if result.history else None
    return TrainRun(out, result, cfg, tok, model, plot, metrics={
        k: v for k, v in metrics.items() if v is not None and not (isinstance(v, float) and math.isnan(v))},
        report=format_forgetting(forgetting) if forgetting else "")
