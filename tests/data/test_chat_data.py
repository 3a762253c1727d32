"""Chat / instruction data (lmforge.data.chat): reading, the assistant-token mask, packing,
collation and seeded batches."""

import json

import pytest
import torch

from lmforge.data.chat import (ChatTemplate, builtin_instructions_path, collate_sft,
                               encode_conversation, load_sft_data, pack_examples,
                               read_sft_jsonl, sft_batch_indices, sft_batches)
from lmforge.errors import ConfigError, DataError
from lmforge.inference.chat_template import find_chat_template
from lmforge.tokenizers.special import IGNORE_INDEX

CHAT = [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 6 + 6?"},
        {"role": "assistant", "content": "12."},
        {"role": "user", "content": "And twice that?"},
        {"role": "assistant", "content": "24."}]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def trained_text(tok, ex):
    return tok.decode([t for t in ex.labels if t != IGNORE_INDEX], skip_special_tokens=False)


def test_builtin_instruction_set():
    convs = read_sft_jsonl(builtin_instructions_path())
    assert 35 <= len(convs) <= 60
    assert all(any(m["role"] == "assistant" for m in c) for c in convs)


def test_default_template_is_chatml():
    t = ChatTemplate()
    assert t.render(CHAT[1:3]) == ("<|im_start|>user\nWhat is 6 + 6?<|im_end|>\n"
                                   "<|im_start|>assistant\n12.<|im_end|>\n")
    assert t.render(CHAT[1:2], add_generation_prompt=True).endswith("<|im_start|>assistant\n")


def test_only_assistant_replies_are_labelled(chat_tokenizer):
    ex = encode_conversation(chat_tokenizer, CHAT)
    assert len(ex.labels) == len(ex.input_ids)
    assert trained_text(chat_tokenizer, ex) == "12.<|im_end|>\n24.<|im_end|>\n"
    assert all(lab in (IGNORE_INDEX, tok) for lab, tok in zip(ex.labels, ex.input_ids))


def test_every_reply_character_is_trained_with_a_space_ending_prompt(chat_tokenizer):
    tpl = ChatTemplate("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n"
                       "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}",
                       eos_token="<|im_end|>")
    chat = CHAT[1:2] + [{"role": "assistant", "content": "'Run' is a verb."}]
    ex = encode_conversation(chat_tokenizer, chat, tpl)
    assert trained_text(chat_tokenizer, ex) == " 'Run' is a verb.<|im_end|>\n"


def test_prompt_response_and_alpaca_rows(tmp_path, chat_tokenizer):
    f = write_jsonl(tmp_path / "pr.jsonl", [
        {"prompt": "Convert 2 km to m.", "response": "2000 m.", "system": "Be brief."},
        "",
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5."}])
    convs = read_sft_jsonl(f)
    assert [m["role"] for m in convs[0]] == ["system", "user", "assistant"]
    assert convs[1][0]["content"] == "Add the numbers.\n\n2 and 3"
    data = load_sft_data(f, chat_tokenizer)
    assert [trained_text(chat_tokenizer, e) for e in data.examples] == [
        "2000 m.<|im_end|>\n", "5.<|im_end|>\n"]


@pytest.mark.parametrize("row, expect", [
    ('{"messages": [', "row 2: not valid JSON"),
    ({"messages": []}, "row 2: field 'messages'"),
    ({"messages": [{"role": "user"}]}, "row 2: field 'messages[0].content' is missing"),
    ({"messages": [{"role": "user", "content": 3}]}, "field 'messages[0].content' must be a string"),
    ({"messages": [{"role": "assitant", "content": "x"}]}, "field 'messages[0].role' is 'assitant'"),
    ({"messages": [{"role": "user", "content": "x"}]}, "has no assistant message"),
    ({"messages": ["hi"]}, "field 'messages[0]'"),
    ({"prompt": "x"}, "expected a 'messages' list or 'prompt' and 'response'"),
    ({"prompt": "x", "response": None}, "field 'response' must be a string"),
    ([1, 2], "expected a JSON object"),
])
def test_malformed_rows_name_file_row_and_field(tmp_path, row, expect):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "response": "b"}, row])
    with pytest.raises(DataError) as e:
        read_sft_jsonl(f)
    assert str(f) in str(e.value) and expect in str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_sft_jsonl(tmp_path / "none.jsonl")
    with pytest.raises(DataError, match="no examples"):
        read_sft_jsonl(write_jsonl(tmp_path / "empty.jsonl", [""]))


def test_truncation_drops_examples_without_assistant_tokens(chat_tokenizer, tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"messages": CHAT}])
    full = load_sft_data(f, chat_tokenizer).examples[0]
    first_trained = next(i for i, t in enumerate(full.labels) if t != IGNORE_INDEX)
    short = load_sft_data(f, chat_tokenizer, max_length=first_trained + 1)
    assert len(short.examples[0]) == first_trained + 1 and short.examples[0].n_trained == 1
    with pytest.raises(DataError, match="max_length"):
        load_sft_data(f, chat_tokenizer, max_length=first_trained)


def test_packing_keeps_every_example(chat_tokenizer):
    examples = load_sft_data(builtin_instructions_path(), chat_tokenizer).examples
    rows = pack_examples(examples, 128)
    assert len(rows) < len(examples) and all(len(r) <= 128 for r in rows)
    pieces = []
    for r in rows:
        bounds = r.starts + [len(r)]
        pieces += [(r.input_ids[a:b], r.labels[a:b]) for a, b in zip(bounds, bounds[1:])]
    key = lambda p: (p[0], p[1])  # noqa: E731
    assert sorted(pieces, key=key) == sorted(((e.input_ids, e.labels) for e in examples), key=key)
    ids, labels, mask = collate_sft(rows, pad_id=0, pad_to=128)
    assert ids.shape == (len(rows), 128)
    assert int(mask.sum()) == sum(len(e) for e in examples)
    assert int((labels != IGNORE_INDEX).sum()) == sum(e.n_trained for e in examples)
    with pytest.raises(DataError, match="packing length"):
        pack_examples(examples, 8)


def test_collate_pads_with_ignored_labels(chat_tokenizer):
    data = load_sft_data(builtin_instructions_path(), chat_tokenizer)
    a, b = data.examples[0], data.examples[1]
    ids, labels, mask = collate_sft([a, b], pad_id=0)
    short = min(len(a), len(b))
    row = 0 if len(a) == short else 1
    assert not mask[row, short:].any() and (labels[row, short:] == IGNORE_INDEX).all()


def test_sft_batches_cover_each_example_once_per_epoch(chat_tokenizer):
    data = load_sft_data(builtin_instructions_path(), chat_tokenizer)
    n = len(data.examples)  # 40 = 10 batches of 4
    fn = sft_batches(data.examples, batch_size=4, seed=1)
    seen = [tuple(ids[ids_mask].tolist()) for s in range(n // 4)
            for ids, _, m in [fn(s, 0, 0)] for ids, ids_mask in zip(ids, m)]
    assert len(set(seen)) == n
    assert all(torch.equal(x, y) for x, y in zip(fn(3, 0, 0), fn(3, 0, 0)))


def test_custom_templates():
    tpl = ChatTemplate("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                       "{% if add_generation_prompt %}### assistant: {% endif %}")
    text, spans = tpl.assistant_spans(CHAT[1:3])
    assert [text[a:b] for a, b in spans] == ["12.\n"]
    no_gen = ChatTemplate("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    text, spans = no_gen.assistant_spans(CHAT[1:3])
    assert [text[a:b] for a, b in spans] == ["[assistant] 12.\n"]  # no generation prompt form
    unstable = ChatTemplate("{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ConfigError, match="prefix-stable"):
        unstable.assistant_spans(CHAT[1:3])
    with pytest.raises(ConfigError, match="not valid Jinja2"):
        ChatTemplate("{% for %}")
    with pytest.raises(ConfigError, match="only user"):
        ChatTemplate("{{ raise_exception('only user') }}").render(CHAT)


def test_find_chat_template(tmp_path):
    assert find_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    assert find_chat_template(tmp_path) == "{{ x }}"
    (tmp_path / "chat_template.jinja").write_text("{{ y }}")
    assert find_chat_template(tmp_path) == "{{ y }}"


def test_collate_is_the_padded_examples(chat_tokenizer):
    """Each row is the example's ids and labels, then pad_id / IGNORE_INDEX up to pad_to."""
    examples = load_sft_data(builtin_instructions_path(), chat_tokenizer).examples[:3]
    ids, labels, mask = collate_sft(examples, pad_id=5, pad_to=200)
    assert ids.shape == labels.shape == mask.shape == (3, 200)
    for b, e in enumerate(examples):
        n = len(e)
        assert ids[b].tolist() == e.input_ids + [5] * (200 - n)
        assert labels[b].tolist() == e.labels + [IGNORE_INDEX] * (200 - n)
        assert mask[b].tolist() == [True] * n + [False] * (200 - n)


def test_batches_are_a_pure_function_of_seed_step_micro_step_rank(chat_tokenizer):
    examples = load_sft_data(builtin_instructions_path(), chat_tokenizer).examples
    n = len(examples)
    # two ranks x two micro-steps take consecutive, disjoint slices of one epoch's order
    picks = [sft_batch_indices(n, 4, seed=3, step=0, micro_step=m, rank=r, grad_accum=2,
                               world_size=2) for m in range(2) for r in range(2)]
    flat = [i for p in picks for i in p]
    assert len(set(flat)) == 16 and all(0 <= i < n for i in flat)
    assert flat == sft_batch_indices(n, 16, seed=3, step=0)
    # the same arguments give the same batch in a fresh function (a resumed run); others differ
    a = sft_batches(examples, 4, seed=3, grad_accum=2, world_size=2)
    b = sft_batches(examples, 4, seed=3, grad_accum=2, world_size=2)
    for step, micro, rank in [(0, 0, 0), (7, 1, 1), (123, 0, 1)]:
        want = collate_sft([examples[i] for i in sft_batch_indices(
            n, 4, 3, step, micro, rank, grad_accum=2, world_size=2)])
        for got in (a(step, micro, rank), b(step, micro, rank)):
            assert all(torch.equal(x, y) for x, y in zip(got, want))
    assert sft_batch_indices(n, 4, seed=3, step=1) != sft_batch_indices(n, 4, seed=4, step=1)
    # each epoch is a fresh permutation
    epochs = [sft_batch_indices(n, n, seed=3, step=e) for e in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(n)) and epochs[0] != epochs[1]
    with pytest.raises(ConfigError, match="positive batch_size"):
        sft_batches(examples, 0)


def test_packing_is_deterministic_best_fit():
    from lmforge.data.chat import SFTExample

    def ex(n, v):
        return SFTExample([v] * n, [v] * n)

    rows = pack_examples([ex(6, 1), ex(5, 2), ex(3, 3), ex(4, 4), ex(2, 5)], 10)
    # 6 opens row 0 (4 left), 5 opens row 1 (5 left), 3 -> row 0 (tightest: 4 >= 3),
    # 4 -> row 1 (5 left), 2 -> a new row (row 0 has 1 left, row 1 has 1 left)
    assert [r.input_ids for r in rows] == [[1] * 6 + [3] * 3, [2] * 5 + [4] * 4, [5] * 2]
    assert [r.starts for r in rows] == [[0, 6], [0, 5], [0]]
