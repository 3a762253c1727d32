"""Regenerate docs/config.md from the config dataclasses: each field's type, default and the
docstring written under it. Run from the repository root: ``python docs/gen_config.py``."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from pathlib import Path

from lmforge.models import ModelConfig
from lmforge.tasks import TASKS, DataConfig, RunConfig, TokenizerConfig
from lmforge.training import TrainConfig

INTRO = """# Run config reference

`lmforge train CONFIG.toml` reads a TOML file with the tables below; every field is optional
and shows its default. `--set table.field=value` overrides any field (values are TOML:
`--set train.lr=3e-4`, `--set model.positional="rope"`). `--preset NAME` starts from a
preset (`tiny`, `shakespeare-char`, `translation-small`, `gpt2-small`; see
`lmforge/tasks/presets.py`). Unknown keys and wrong types are refused with the field's name.

This file is generated from the dataclasses' field docstrings: `python docs/gen_config.py`.
"""

FIXED = [  # (heading, class, note)
    ("top level", RunConfig, ""),
    ("[model]", ModelConfig, ""),
    ("[tokenizer]", TokenizerConfig, ""),
    ("[data]", DataConfig, ""),
    ("[train]", TrainConfig, ""),
]


def task_sections() -> list[tuple[str, type, str]]:
    """One section per task table, from the task registry (a table may serve several tasks)."""
    users: dict[str, list] = {}
    for t in TASKS.values():
        if t.section:
            users.setdefault(t.section, []).append(t)
    out = []
    for name, tasks in users.items():
        which = " or ".join(f'`task = "{t.name}"`' for t in tasks)
        mods = ", ".join(sorted({f"`{type(t).__module__}`" for t in tasks}))
        out.append((f"[{name}]", tasks[0].config, f"Read only with {which} ({mods})."))
    return out


def sections() -> list[tuple[str, type, str]]:
    """The fixed tables, the task tables, and every nested table under them."""
    out = []
    for heading, cls, note in FIXED + task_sections():
        out.append((heading, cls, note))
        for f in dataclasses.fields(cls):
            if heading != "top level" and callable(f.default_factory) \
                    and dataclasses.is_dataclass(f.default_factory()):
                out.append((f"{heading[:-1]}.{f.name}]", type(f.default_factory()), ""))
    return out


def field_docs(cls) -> dict[str, str]:
    """The string literal written right under each annotated field of ``cls``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) \
                and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "see below" if dataclasses.is_dataclass(value) else repr(value)
    return "required"


def section(heading: str, cls, note: str) -> str:
    docs = field_docs(cls)
    rows = []
    for f in dataclasses.fields(cls):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if heading == "top level" and dataclasses.is_dataclass(f.default_factory()
                                                                if callable(f.default_factory) else None):
            continue  # the tables, documented in their own sections
        rows.append(f"| `{f.name}` | `{kind.replace('|', chr(92) + '|')}` | `{default(f)}` | "
                    f"{docs.get(f.name, '')} |")
    head = f"## {heading}\n\n" + (f"{note}\n\n" if note else "")
    return head + "| field | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"


def render() -> str:
    return INTRO + "".join("\n" + section(*s) for s in sections())


if __name__ == "__main__":
    text = render()
    Path(__file__).with_name("config.md").write_text(text, encoding="utf-8")
    print(f"wrote docs/config.md ({len(text.splitlines())} lines)")
