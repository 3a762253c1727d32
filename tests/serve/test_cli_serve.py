"""`lmforge serve`: the API key from a file, refusals with exit code 2, a graceful engine
shutdown that ends waiting requests."""

import queue

import pytest

from lmforge.cli.main import main
from lmforge.cli.serve import read_api_key
from lmforge.errors import ConfigError


def test_api_key_file(tmp_path):
    f = tmp_path / "key"
    f.write_text("s3cret\n")
    assert read_api_key(None, str(f)) == "s3cret" and read_api_key("k", None) == "k"
    with pytest.raises(ConfigError, match="not both"):
        read_api_key("k", str(f))
    with pytest.raises(ConfigError, match="--api-key-file"):
        read_api_key(None, str(tmp_path / "missing"))


def test_missing_model_dir_exits_2(tmp_path, capsys):
    pytest.importorskip("uvicorn")
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_shutdown_ends_waiting_requests(tiny_dir):
    from lmforge.inference import GenerationConfig
    from lmforge.modeldir import load_model_dir
    from lmforge.serve import Engine, Request

    eng = Engine(load_model_dir(tiny_dir).model, max_batch=0)  # admits nothing
    q = queue.Queue()
    eng.submit(Request([1, 2, 3], GenerationConfig(max_new_tokens=5, temperature=0), sink=q.put))
    eng.shutdown()
    assert q.get(timeout=5) == ("done", "shutdown")
