"""Chat / instruction data for supervised fine-tuning of causal LMs: reading, tokenising with
the assistant-token mask, packing, collation and seeded batches.

Input: JSONL files, one example per line, in either form

    {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "..."}, ...]}
    {"prompt": "...", "response": "...", "system": "..." (optional)}

(``{"instruction", "input" (optional), "output"}`` rows, as in Alpaca, are read as
prompt/response). Each conversation is rendered with a chat template — a Jinja2 string as in
a Hugging Face ``chat_template``, ChatML by default — tokenised once, and labelled so that only
the tokens of the assistant's replies (their content and end-of-turn marker) are trained:
every other label is ``IGNORE_INDEX`` (-100).

Labels are aligned with the input ids (``labels[i]`` is ``input_ids[i]`` or -100, the Hugging
Face convention); the objective (:func:`lmforge.objectives.sft.sft_loss`) shifts them.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from ..errors import ConfigError, DataError
from ..tokenizers.chat_template import CHATML, compile_template, render_chat
from ..tokenizers.special import IGNORE_INDEX
from .batches import epoch_indices

ROLES = ("system", "user", "assistant", "tool")
TRAINED_ROLE = "assistant"

Message = dict[str, str]
Conversation = list[Message]

CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
"""Add these as special tokens to a tokenizer that should use the default template."""
DEFAULT_CHAT_TEMPLATE = CHATML
"""ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message."""


def builtin_instructions_path() -> Path:
    """The small instruction set shipped with lmforge (arithmetic, units, definitions)."""
    return Path(__file__).resolve().parent / "instructions.jsonl"


# -- reading JSONL ----------------------------------------------------------------------------

def _bad(path: Path, row: int, field_: str, why: str) -> DataError:
    return DataError(f"{path}, row {row}: field {field_!r} {why}")


def _chat_messages(msgs: Any, path: Path, row: int) -> Conversation:
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


def _messages_from_row(obj: Any, path: Path, row: int) -> Conversation:
    if not isinstance(obj, dict):
        raise DataError(f"{path}, row {row}: expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        return _chat_messages(obj["messages"], path, row)
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


# -- the chat template and the assistant-token mask -------------------------------------------

class ChatTemplate:
    """A Jinja2 chat template in the Hugging Face ``chat_template`` dialect, rendered by
    :func:`lmforge.tokenizers.chat_template.render_chat` (the renderer ``lmforge chat`` uses,
    so training and inference see the same text). None = ChatML."""

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


@dataclass
class SFTExample:
    input_ids: list[int]
    labels: list[int]  # same length; the token id where trained, else IGNORE_INDEX
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


# -- packing, collation and batches -----------------------------------------------------------

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


def collate_sft(examples: Sequence[SFTExample], pad_id: int = 0, pad_to: int | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the longest example (or ``pad_to``): (input_ids (B, T) long,
    labels (B, T) long with IGNORE_INDEX on padding, padding_mask (B, T) bool, True = real
    token)."""
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


def sft_batch_indices(n: int, batch_size: int, seed: int, step: int, micro_step: int = 0,
                      rank: int = 0, grad_accum: int = 1, world_size: int = 1) -> list[int]:
    """The example indices of one training batch: batch number
    ``(step * grad_accum + micro_step) * world_size + rank`` of an endless stream that goes over
    the ``n`` examples in a fresh seeded permutation each epoch — a pure function of
    (seed, step, micro_step, rank), so a resumed run sees the same batches."""
    k = (step * grad_accum + micro_step) * world_size + rank
    return epoch_indices(n, batch_size, seed, k * batch_size).tolist()


def sft_batches(examples: Sequence[SFTExample], batch_size: int, pad_id: int = 0,
                pad_to: int | None = None, seed: int = 0, grad_accum: int = 1,
                world_size: int = 1) -> Callable[[int, int, int], tuple]:
    """A ``train_batch(step, micro_step, rank)`` function for the Trainer: the collated
    examples :func:`sft_batch_indices` picks."""
    if not examples or batch_size <= 0:
        raise ConfigError("sft_batches needs examples and a positive batch_size")

    def train_batch(step: int, micro: int = 0, rank: int = 0):
        picks = sft_batch_indices(len(examples), batch_size, seed, step, micro, rank,
                                  grad_accum, world_size)
        return collate_sft([examples[i] for i in picks], pad_id, pad_to)

    return train_batch
