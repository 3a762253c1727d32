import json

import pytest
import torch
import torch.nn.functional as F
from ft_helpers import tiny_model

from lmforge.errors import ConfigError, DataError
from lmforge.finetune import (IGNORE_INDEX, ChatTemplate, builtin_instructions_path, collate,
                              encode_conversation, find_chat_template, load_sft_data,
                              pack_examples, read_sft_jsonl, sft_batches, sft_loss)

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


def test_loss_ignores_prompt_targets_and_sees_assistant_targets(chat_tokenizer):
    ex = encode_conversation(chat_tokenizer, CHAT)
    ids = torch.tensor([ex.input_ids])  # (1, T)
    trained = torch.tensor([ex.labels]) != IGNORE_INDEX  # (1, T)
    model = tiny_model(vocab_size=chat_tokenizer.get_vocab_size())

    def loss(targets):
        return sft_loss(model, (ids, torch.where(trained, targets, IGNORE_INDEX))).item()

    base = loss(ids)
    assert base == pytest.approx(sft_loss(model, (ids, torch.tensor([ex.labels]))).item())
    other = ids.clone()
    prompt_pos = (~trained).nonzero()[:, 1]
    other[0, prompt_pos] = (other[0, prompt_pos] + 7) % 400  # every prompt target changed
    assert loss(other) == base
    other = ids.clone()
    k = int(trained.nonzero()[0, 1])
    other[0, k] = (other[0, k] + 7) % 400  # one assistant target changed
    assert loss(other) != base


def test_sft_loss_matches_manual_cross_entropy(chat_tokenizer):
    data = load_sft_data(builtin_instructions_path(), chat_tokenizer)
    ids, labels, mask = collate(data.examples[:3], pad_id=0)
    model = tiny_model(vocab_size=400)
    got = sft_loss(model, {"input_ids": ids, "labels": labels, "padding_mask": mask})
    logits = model(ids, padding_mask=mask)
    terms = [F.cross_entropy(logits[b, t - 1], labels[b, t], reduction="sum")
             for b in range(ids.shape[0]) for t in range(1, ids.shape[1]) if labels[b, t] >= 0]
    torch.testing.assert_close(got, torch.stack(terms).mean())


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
    ids, labels, mask = collate(rows, pad_id=0, pad_to=128)
    assert ids.shape == (len(rows), 128)
    assert int(mask.sum()) == sum(len(e) for e in examples)
    assert int((labels != IGNORE_INDEX).sum()) == sum(e.n_trained for e in examples)
    with pytest.raises(DataError, match="packing length"):
        pack_examples(examples, 8)


def test_collate_pads_with_ignored_labels(chat_tokenizer):
    data = load_sft_data(builtin_instructions_path(), chat_tokenizer)
    a, b = data.examples[0], data.examples[1]
    ids, labels, mask = collate([a, b], pad_id=0)
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


def test_lora_sft_overfits_the_instruction_set(chat_tokenizer):
    from lmforge.finetune import ALL_LINEAR, LoRAConfig, inject_lora

    data = load_sft_data(builtin_instructions_path(), chat_tokenizer)
    rows = pack_examples(data.examples, 256)
    batch = collate(rows[:2], pad_to=256)
    # untied, so that the output head can carry an adapter too: with a frozen random head the
    # logits stay near uniform whatever the blocks learn
    model = tiny_model(vocab_size=400, context_length=256, tie_embeddings=False)
    inject_lora(model, LoRAConfig(rank=8, alpha=16, targets=ALL_LINEAR + ("lm_head",)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    with torch.no_grad():
        first = sft_loss(model, batch).item()
    for _ in range(30):
        opt.zero_grad()
        loss = sft_loss(model, batch)
        loss.backward()
        opt.step()
    assert loss.item() < first - 1.0


def test_chunked_trained_token_loss_equals_full_logits(chat_tokenizer, monkeypatch):
    """The CausalLM path (head on trained positions only, chunks recomputed in backward)
    gives the loss and gradients of computing every logit."""
    import copy

    import lmforge.finetune.sft as sft_mod

    data = load_sft_data(builtin_instructions_path(), chat_tokenizer)
    batch = collate(data.examples[:3], pad_id=0)
    model = tiny_model(vocab_size=400).train()
    plain = copy.deepcopy(model)

    class Wrapped(torch.nn.Module):  # not a CausalLM: takes the all-logits path
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, **kw):
            return self.m(ids, **kw)

    monkeypatch.setattr(sft_mod, "LOGITS_PER_CHUNK", 400 * 7)  # 7 rows per chunk
    got = sft_loss(model, batch)
    want = sft_loss(Wrapped(plain), batch)
    torch.testing.assert_close(got, want)
    got.backward()
    want.backward()
    for (name, a), b in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(sft_loss(model, batch), want.detach())
