"""The models a server holds: each model directory loaded once, named by its folder name, with
what it can do (generate, embed, classify, translate) and, for a decoder, its batching
:class:`~lmforge.serve.engine.Engine`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..inference import Classifier
from ..inference.chat import ChatSession
from ..inference.settings import GenerationSettings, generation_settings
from ..inference.translate import Translator
from ..inference.quant import DEFAULT_GROUP_SIZE, DEFAULT_HEAD, load_for_inference
from ..modeldir import LoadedModel, read_config
from ..modeldir.directory import load_source_tokenizer
from ..models import model_kind
from ..models.config import RECURRENT_ARCHS
from ..tasks.embed import embed_texts
from .engine import Engine


@dataclass
class ServedModel:
    """One loaded model directory and the objects that serve it."""

    name: str
    lm: LoadedModel
    kind: str
    """``decoder``, ``encoder``, ``classifier`` or ``seq2seq`` (:func:`lmforge.models.model_kind`)."""
    settings: GenerationSettings | None = None
    engine: Engine | None = None
    classifier: Classifier | None = None
    translator: Translator | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Serialises the models run outside the engine (embeddings, classify, translate)."""

    @property
    def context(self) -> int:
        return self.lm.config.context_length

    def capabilities(self) -> list[str]:
        caps = {"decoder": ["completions", "chat", "embeddings", "explore"],
                "encoder": ["embeddings"], "classifier": ["classify", "embeddings"],
                "seq2seq": ["translate"]}
        return caps[self.kind]

    def encode(self, text: str) -> list[int]:
        return self.lm.tokenizer.encode(text).ids

    def chat_prompt(self, messages: list[dict]) -> tuple[list[int], list[int]]:
        """(prompt ids, stop ids) of a conversation through the model's chat template."""
        session = ChatSession(self.lm.model, self.lm.tokenizer, settings=self.settings,
                              reuse_cache=False)
        session.messages = list(messages)
        return session.prompt_ids(), session.stop_ids

    def embed(self, texts: list[str]) -> np.ndarray:  # (N, C) float32
        """Sentence embeddings: an encoder as `lmforge embed` computes them (its recorded
        pooling and normalisation); a decoder: the mean of its last hidden states."""
        with self.lock:
            if self.kind != "decoder":
                return embed_texts(self.lm, texts)
            return np.stack([_decoder_mean(self.lm, self.encode(t)) for t in texts])


@torch.no_grad()
def _decoder_mean(lm: LoadedModel, ids: list[int]) -> np.ndarray:  # (C,)
    """Mean of a decoder's final hidden states over the text's tokens."""
    ids = ids[-lm.config.context_length:] or [0]
    device = next(lm.model.parameters()).device
    h = lm.model.backbone(torch.tensor([ids], device=device))  # (1, T, C)
    return h[0].float().mean(0).cpu().numpy()


def load_served(path: str | Path, *, max_batch: int, max_queue: int,
                device: str = "cpu", dtype: str | None = None, quant: str | None = None,
                group_size: int = DEFAULT_GROUP_SIZE, head_quant: str = DEFAULT_HEAD
                ) -> ServedModel:
    """Load one model directory for serving (a decoder gets its engine thread). A quantised
    directory (``lmforge quantize``, ``import --keep-quant``) loads as such; ``quant``
    (int8/int4, with ``group_size`` and ``head_quant``) quantises a float decoder as it loads,
    as ``generate --quant`` does."""
    path = Path(path)
    if quant and (kind := model_kind(read_config(path))) != "decoder":
        raise ConfigError(f"--quant: {path} is a {kind} model; quantised serving is for "
                          "decoders (completions and chat)")
    lm = load_for_inference(path, device, dtype, quant, group_size, head_quant)
    kind = model_kind(lm.config)
    if kind in RECURRENT_ARCHS:
        raise ConfigError(f"{path}: a recurrent LM (model.arch = {kind!r}) cannot be served (the "
                          "server batches with a KV cache); use lmforge generate or lmforge chat")
    served = ServedModel(path.resolve().name, lm, kind)
    if kind == "decoder":
        served.settings = generation_settings(lm.meta, lm.tokenizer)
        served.engine = Engine(lm.model, max_batch=max_batch, max_queue=max_queue)
    elif kind == "classifier":
        served.classifier = Classifier.load(path, device=device)
    elif kind == "seq2seq":
        served.translator = Translator(lm.model, lm.tokenizer, lm.meta,
                                       src_tokenizer=load_source_tokenizer(path))
    return served


def load_all(paths: list[str], **kw) -> dict[str, ServedModel]:
    """Load every directory; two with the same folder name are refused."""
    models: dict[str, ServedModel] = {}
    for p in paths:
        m = load_served(p, **kw)
        if m.name in models:
            raise ConfigError(f"two model directories are named {m.name!r}; the server names a "
                              "model by its folder name, so rename one")
        models[m.name] = m
    return models
