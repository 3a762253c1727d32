"""One module per job, wiring model + objective + data + trainer/generator."""

from __future__ import annotations

from ..training import RunConfig


def train_task(cfg: RunConfig, **kw):
    """Train with the task ``cfg.model.arch`` calls for: causal-LM pre-training for
    ``decoder``, masked-LM (+ next-sentence) pre-training for ``encoder``. Keyword arguments
    (resume, overwrite, stop_at, ...) go to :func:`~lmforge.tasks.lm.train_lm` or
    :func:`~lmforge.tasks.mlm.train_mlm`; both return a :class:`~lmforge.tasks.common.TrainRun`."""
    if cfg.model.arch == "encoder":
        from .mlm import train_mlm

        return train_mlm(cfg, **kw)
    from .lm import train_lm

    return train_lm(cfg, **kw)


__all__ = ["train_task"]
