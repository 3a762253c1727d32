"""One module per job, wiring model + objective + data + trainer/generator."""

from __future__ import annotations

from ..training import RunConfig


def train_task(cfg: RunConfig, **kw):
    """Train with the task ``cfg.task`` and ``cfg.model.arch`` call for: ``task = "classify"``
    fine-tunes an encoder classifier (:func:`~lmforge.tasks.classify.train_classifier`),
    ``task = "sft"`` instruction-tunes a causal LM, fully or with LoRA/QLoRA
    (:func:`~lmforge.tasks.sft.train_sft`);
    otherwise causal-LM pre-training for ``decoder``, masked-LM (+ next-sentence) pre-training
    for ``encoder``, translation or span-corruption training for ``seq2seq``
    (:func:`~lmforge.tasks.seq2seq.train_seq2seq`). Keyword arguments (resume, overwrite, stop_at, ...) go to that function;
    each returns a :class:`~lmforge.tasks.common.TrainRun`."""
    if cfg.task == "classify":
        from .classify import train_classifier

        return train_classifier(cfg, **kw)
    if cfg.task == "sft":
        from .sft import train_sft

        return train_sft(cfg, **kw)
    if cfg.model.arch == "seq2seq":
        from .seq2seq import train_seq2seq

        return train_seq2seq(cfg, **kw)
    if cfg.model.arch == "encoder":
        from .mlm import train_mlm

        return train_mlm(cfg, **kw)
    from .lm import train_lm

    return train_lm(cfg, **kw)


__all__ = ["train_task"]
