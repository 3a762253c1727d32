"""Supervised fine-tuning (instruction tuning) data and objective for causal LMs.

Input: JSONL files, one example per line, in either form

    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "..."}, ...]}
    {"prompt": "...", "response": "...", "system": "..." (optional)}

(``{"instruction", "input" (optional), "output"}`` rows, as in Alpaca, are read as
prompt/response). Each conversation is rendered with a chat template — a Jinja2 string as in
a Hugging Face ``chat_template``, ChatML by default — tokenised once, and labelled so that only
the tokens of the assistant's replies (their content and end-of-turn marker) are trained:
every other label is -100.

Labels are aligned with the input ids (``labels[i]`` is ``input_ids[i]`` or -100, the Hugging
Face convention); :func:`sft_loss` shifts them: the logits at position t predict label t + 1.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from ..inference.chat_template import CHATML, compile_template, render_chat

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant", "tool")
TRAINED_ROLE = "assistant"

Message = dict[str, str]
Conversation = list[Message]

CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
"""Add these as special tokens to a tokenizer that should use the default template."""
DEFAULT_CHAT_TEMPLATE = CHATML
"""ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message."""


# -- reading JSONL ----------------------------------------------------------------------------

def _bad(path: Path, row: int, field_: str, why: str) -> DataError:
    return DataError(f"{path}, row {row}: field {field_!r} {why}")


def _messages_from_row(obj: Any, path: Path, row: int) -> Conversation:
    if not isinstance(obj, dict):
        raise DataError(f"{path}, row {row}: expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise _bad(path, row, "messages", "must be a non-empty list of {role, content} objects")
        out: Conversation = []
        for i, m in enumerate(msgs):
            where = f"messages[{i}]"
            if not isinstance(m, dict):
                raise _bad(path, row, where, f"must be an object with role and content, got {m!r}")
            for key in ("role", "content"):
                if key not in m:
                    raise _bad(path, row, f"{where}.{key}", "is missing")
                if not isinstance(m[key], str):
                    raise _bad(path, row, f"{where}.{key}",
                               f"must be a string, got {type(m[key]).__name__}")
            if m["role"] not in ROLES:
                raise _bad(path, row, f"{where}.role",
                           f"is {m['role']!r}; expected one of {', '.join(ROLES)}")
            out.append({"role": m["role"], "content": m["content"]})
        if not any(m["role"] == TRAINED_ROLE for m in out):
            raise _bad(path, row, "messages", "has no assistant message: nothing to learn from")
        return out
    if "instruction" in obj and "prompt" not in obj:  # Alpaca-style
        prompt_key, response_key = "instruction", "output"
    else:
        prompt_key, response_key = "prompt", "response"
    if prompt_key not in obj or response_key not in obj:
        raise DataError(f"{path}, row {row}: expected a 'messages' list or 'prompt' and "
                        f"'response' fields; found {sorted(obj)}")
    for key in (prompt_key, response_key, "system", "input"):
        if key in obj and not isinstance(obj[key], str):
            raise _bad(path, row, key, f"must be a string, got {type(obj[key]).__name__}")
    prompt = obj[prompt_key]
    if prompt_key == "instruction" and obj.get("input"):
        prompt = f"{prompt}\n\n{obj['input']}"
    msgs = [{"role": "system", "content": obj["system"]}] if obj.get("system") else []
    return msgs + [{"role": "user", "content": prompt},
                   {"role": "assistant", "content": obj[response_key]}]


def read_sft_jsonl(path: str | Path) -> list[Conversation]:
    """Conversations from a chat or prompt/response JSONL file (blank lines skipped). A
    malformed row is a DataError naming the file, the row (line number) and the field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist (expected a JSONL file of chat or "
                        "prompt/response examples)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e})") from None
    out = []
    for row, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, row {row}: not valid JSON ({e.msg} at column {e.colno})") from None
        out.append(_messages_from_row(obj, path, row))
    if not out:
        raise DataError(f"{path} holds no examples")
    return out


def builtin_instructions_path() -> Path:
    """The small instruction set shipped with lmforge (arithmetic, units, definitions)."""
    return Path(__file__).resolve().parent / "data" / "instructions.jsonl"


# -- chat templates ---------------------------------------------------------------------------

class ChatTemplate:
    """A Jinja2 chat template in the Hugging Face ``chat_template`` dialect, rendered by
    :func:`lmforge.inference.chat_template.render_chat` (the renderer ``lmforge chat`` uses, so
    training and inference see the same text). None = ChatML."""

    def __init__(self, template: str | None = None, bos_token: str = "", eos_token: str = ""):
        self.source = template or DEFAULT_CHAT_TEMPLATE
        self.bos_token, self.eos_token = bos_token, eos_token
        compile_template(self.source)  # a syntax error is a ConfigError now, not per example

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return render_chat(list(messages), self.source, add_generation_prompt=add_generation_prompt,
                           bos_token=self.bos_token, eos_token=self.eos_token)

    def assistant_spans(self, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans [start, end) to train: for each
        assistant message, what the template adds after the generation prompt (the reply and
        its end-of-turn marker). Found by rendering growing prefixes of the conversation, so
        the template must render a prefix of the conversation as a prefix of the text."""
        text = self.render(messages)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != TRAINED_ROLE:
                continue
            upto = self.render(messages[: i + 1])
            start_text = self.render(messages[:i], add_generation_prompt=True)
            if not upto.startswith(start_text):  # the template has no generation prompt form
                start_text = self.render(messages[:i])
            if not (upto.startswith(start_text) and text.startswith(upto)):
                raise ConfigError("chat template is not prefix-stable (rendering the first n "
                                  "messages does not give a prefix of the whole conversation), "
                                  "so the assistant replies cannot be located")
            spans.append((len(start_text), len(upto)))
        return text, spans


def find_chat_template(model_dir: str | Path) -> str | None:
    """A chat template stored with a model: ``chat_template.jinja``, the ``chat_template`` of
    ``tokenizer_config.json`` (Hugging Face) or of ``meta.json`` (top level, or under
    ``generation`` as imports write it); None when there is none."""
    d = Path(model_dir)
    if (d / "chat_template.jinja").is_file():
        return (d / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("tokenizer_config.json", "meta.json"):
        f = d / name
        if f.is_file():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            # imported models keep it with their stop tokens under meta["generation"]
            t = data.get("chat_template") or (data.get("generation") or {}).get("chat_template")
            if isinstance(t, str) and t:
                return t
    return None


# -- tokenising -------------------------------------------------------------------------------

@dataclass
class SFTExample:
    input_ids: list[int]
    labels: list[int]  # same length; the token id where trained, else -100
    starts: list[int] = field(default_factory=lambda: [0])
    """Offsets where each packed example begins (one entry, 0, when not packed)."""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def _encode_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and character offsets from a ``tokenizers.Tokenizer`` or a Hugging Face
    ``transformers`` fast tokenizer."""
    if hasattr(tokenizer, "encode_batch"):  # tokenizers.Tokenizer
        enc = tokenizer.encode(text, add_special_tokens=False)
        return list(enc.ids), [tuple(o) for o in enc.offsets]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def encode_conversation(tokenizer, messages: Sequence[Message], template: ChatTemplate | None = None,
                        max_length: int | None = None) -> SFTExample | None:
    """Render, tokenise and label one conversation: a token is trained when it overlaps an
    assistant span. ``max_length`` keeps the first tokens; None when nothing trainable is
    left."""
    template = template or ChatTemplate()
    text, spans = template.assistant_spans(messages)
    ids, offsets = _encode_with_offsets(tokenizer, text)
    # a token is trained when it overlaps a reply: with a template whose generation prompt
    # ends in a space, the tokenizer may merge that space with the reply's first character
    labels = [tok if any(start < e and end > s for s, e in spans) else IGNORE_INDEX
              for tok, (start, end) in zip(ids, offsets)]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    ex = SFTExample(ids, labels)
    return ex if ex.n_trained else None


@dataclass
class SFTData:
    examples: list[SFTExample]
    dropped: int = 0
    """Conversations left out: no assistant token within ``max_length``."""

    @property
    def n_tokens(self) -> int:
        return sum(len(e) for e in self.examples)

    @property
    def n_trained(self) -> int:
        return sum(e.n_trained for e in self.examples)


def load_sft_data(paths: str | Path | Iterable[str | Path], tokenizer, template: str | None = None,
                  max_length: int | None = None, bos_token: str = "",
                  eos_token: str = "") -> SFTData:
    """Read one or more JSONL files and tokenise them (see :func:`encode_conversation`).
    ``template`` is a Jinja2 chat template string (None: ChatML)."""
    tpl = ChatTemplate(template, bos_token=bos_token, eos_token=eos_token)
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    data = SFTData([])
    for p in paths:
        for conv in read_sft_jsonl(p):
            ex = encode_conversation(tokenizer, conv, tpl, max_length)
            if ex is None:
                data.dropped += 1
            else:
                data.examples.append(ex)
    if not data.examples:
        raise DataError(f"no example of {', '.join(map(str, paths))} keeps an assistant token "
                        f"within max_length = {max_length}")
    return data


# -- packing and batches ----------------------------------------------------------------------

def pack_examples(examples: Sequence[SFTExample], seq_len: int) -> list[SFTExample]:
    """Concatenate whole examples into rows of at most ``seq_len`` tokens (best fit: each
    example goes to the row it fills most tightly; within a row the examples keep their
    order). No example is split, so every token of every example is kept. Tokens of one
    example can attend to the earlier examples of its row (the backbone has no block-diagonal
    mask); their labels are unaffected. An example longer than ``seq_len`` is a DataError
    (tokenise with ``max_length <= seq_len``)."""
    rows: list[SFTExample] = []
    free: list[tuple[int, int]] = []  # (space left, row index), sorted; full rows left out
    for i, ex in enumerate(examples):
        n = len(ex)
        if n > seq_len:
            raise DataError(f"example {i} has {n} tokens, more than the packing length "
                            f"{seq_len}; load the data with max_length <= {seq_len}")
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, r = free.pop(k)
            row = rows[r]
            row.starts.append(len(row))
            row.input_ids.extend(ex.input_ids)
            row.labels.extend(ex.labels)
        else:
            space, r = seq_len, len(rows)
            rows.append(SFTExample(list(ex.input_ids), list(ex.labels), [0]))
        if space - n > 0:
            bisect.insort(free, (space - n, r))
    return rows


def collate(examples: Sequence[SFTExample], pad_id: int = 0, pad_to: int | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the longest example (or ``pad_to``): (input_ids (B, T) long,
    labels (B, T) long with -100 on padding, padding_mask (B, T) bool, True = real token)."""
    T = max(max(len(e) for e in examples), pad_to or 0)
    B = len(examples)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    for b, e in enumerate(examples):
        n = len(e)
        ids[b, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[b, :n] = torch.tensor(e.labels, dtype=torch.long)
        mask[b, :n] = True
    return ids, labels, mask


def sft_batches(examples: Sequence[SFTExample], batch_size: int, pad_id: int = 0,
                pad_to: int | None = None, seed: int = 0, grad_accum: int = 1,
                world_size: int = 1) -> Callable[[int, int, int], tuple]:
    """A ``train_batch(step, micro_step, rank)`` function for the Trainer: batch number
    ``(step * grad_accum + micro) * world_size + rank`` of an endless stream that goes over
    the examples in a fresh permutation each epoch (deterministic in ``seed``)."""
    n = len(examples)
    if n == 0 or batch_size <= 0:
        raise ConfigError("sft_batches needs examples and a positive batch_size")
    perms: dict[int, list[int]] = {}

    def order(epoch: int) -> list[int]:
        if epoch not in perms:
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            perms[epoch] = torch.randperm(n, generator=g).tolist()
        return perms[epoch]

    def train_batch(step: int, micro: int = 0, rank: int = 0):
        k = (step * grad_accum + micro) * world_size + rank
        picks = [examples[order(p // n)[p % n]] for p in range(k * batch_size, (k + 1) * batch_size)]
        return collate(picks, pad_id, pad_to)

    return train_batch


# -- the objective ----------------------------------------------------------------------------

LOGITS_PER_CHUNK = 1 << 23
"""The trained-token loss computes at most this many logits (rows x vocabulary) at once."""


def sft_loss(model: nn.Module, batch) -> torch.Tensor:
    """Mean cross-entropy over the trained (assistant) tokens of a batch.

    batch = (input_ids (B, T), labels (B, T)[, padding_mask (B, T)]) or a dict with those
    keys (``input_ids``, ``labels``, ``padding_mask``); labels aligned with the inputs.

    For a plain :class:`~lmforge.models.CausalLM` the output head runs only on the positions
    that predict a trained token, a chunk of rows at a time, each chunk's logits recomputed in
    the backward pass instead of kept: the (B, T, vocabulary) logits never exist (with
    SmolLM2's 49,152 tokens, 200 MB per 1,024 tokens, several copies of them in the backward
    pass). Other models (wrapped for DDP or torch.compile, encoder-decoders) take the plain
    path: all logits, then the loss on the trained ones.
    """
    from ..models.causal_lm import CausalLM

    if isinstance(batch, dict):
        ids, labels, mask = batch["input_ids"], batch["labels"], batch.get("padding_mask")
    else:
        ids, labels, *rest = batch
        mask = rest[0] if rest else None
    kw = {"padding_mask": mask} if mask is not None else {}
    if type(model) is CausalLM:
        return _trained_token_loss(model, ids, labels, kw)
    logits = model(ids, **kw)  # (B, T, V)
    pred = logits[:, :-1].flatten(0, 1).float()  # ((B*(T-1)), V): position t predicts t + 1
    target = labels[:, 1:].flatten()
    if not bool((target != IGNORE_INDEX).any()):
        return logits.sum() * 0.0  # nothing to train in this batch: a zero that keeps the graph
    return F.cross_entropy(pred, target, ignore_index=IGNORE_INDEX)


def _chunk_nll(head: nn.Module, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the rows ``h`` (N, C) against ``y`` (N,)."""
    return F.cross_entropy(head(h).float(), y, reduction="sum")


def _trained_token_loss(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor,
                        kw: dict) -> torch.Tensor:
    from torch.utils.checkpoint import checkpoint

    h = model.backbone(ids, **kw)  # (B, T, C)
    target = labels[:, 1:]  # (B, T-1): position t predicts label t + 1
    keep = target != IGNORE_INDEX  # (B, T-1)
    n = int(keep.sum())
    if n == 0:
        return h.sum() * 0.0  # nothing to train in this batch: a zero that keeps the graph
    rows, ys = h[:, :-1][keep], target[keep]  # (N, C), (N,)
    step = max(1, LOGITS_PER_CHUNK // model.cfg.vocab_size)
    total = h.new_zeros((), dtype=torch.float32)
    for i in range(0, n, step):
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_nll, model.lm_head, rows[i:i + step],
                                       ys[i:i + step], use_reentrant=False)
        else:
            total = total + _chunk_nll(model.lm_head, rows[i:i + step], ys[i:i + step])
    return total / n
