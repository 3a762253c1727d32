"""docs/config.md is generated from the config dataclasses' field docstrings; it must be
current (regenerate with `python docs/gen_config.py`)."""

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_config_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen_config", DOCS / "gen_config.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (DOCS / "config.md").read_text(encoding="utf-8") == gen.render(), \
        "docs/config.md is stale: run `python docs/gen_config.py`"
    assert "## [seq2seq]" in gen.render() and "`separate_tokenizers`" in gen.render()
