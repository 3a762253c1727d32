"""The command registry and ``main``: every command is on the command line with its help, a
command added with one ``register`` call runs, errors become one stderr line and an exit code
(or a traceback with LMFORGE_DEBUG=1), and ``eval`` picks its measure by the architecture."""

import argparse
import json
from pathlib import Path

import pytest

from lmforge.cli import registry
from lmforge.cli.main import build_parser, main
from lmforge.cli.registry import Command
from lmforge.errors import DataError

BUILT_IN = ["quickstart", "tokenizer", "train", "generate", "eval", "info", "import", "export",
            "average", "quantize", "classify", "embed", "translate", "chat", "serve", "explain",
            "attention", "forecast"]


def test_every_command_is_registered_and_in_the_help(capsys):
    cmds = registry.commands()
    assert [c.name for c in cmds] == BUILT_IN  # nothing lost, in the documented order
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps long help lines
    for cmd in cmds:
        assert len(cmd.help) > 10, cmd.name
        assert f" {cmd.name} " in shown and " ".join(cmd.help.split()[:4]) in shown, cmd.name


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_command_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: lmforge {name}")


def test_two_modules_defining_one_name_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "COMMAND_MODULES", ("info", "info"))
    with pytest.raises(RuntimeError, match="two lmforge commands are named 'info'"):
        registry.commands()


def _toy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("word")
    p.add_argument("--raise", dest="exc", choices=["oserror", "value", "lmforge", "interrupt"])
    p.add_argument("--code", type=int)


def _toy_run(args: argparse.Namespace) -> int | None:
    if args.exc == "oserror":
        open(Path("/nonexistent-dir") / args.word, encoding="utf-8")  # FileNotFoundError
    if args.exc == "value":
        raise ValueError(f"bad {args.word}")
    if args.exc == "lmforge":
        raise DataError(f"{args.word}: line 3 is empty; remove empty lines")
    if args.exc == "interrupt":
        raise KeyboardInterrupt
    print(f"toy says {args.word}")
    return args.code


@pytest.fixture
def toy():
    cmd = registry.register(Command("toy", "a toy command for the tests", _toy_arguments,
                                    _toy_run))
    yield cmd
    registry.unregister("toy")
    assert "toy" not in [c.name for c in registry.commands()]


def test_a_registered_command_runs_through_main(toy, capsys):
    assert "toy" in build_parser().format_help()
    assert main(["toy", "hello"]) == 0
    assert capsys.readouterr().out == "toy says hello\n"
    assert main(["toy", "hello", "--code", "3"]) == 3  # run's return value is the exit code


def _one_line_err(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_os_error_is_one_line_naming_the_path(toy, capsys, monkeypatch):
    monkeypatch.delenv("LMFORGE_DEBUG", raising=False)
    assert main(["toy", "notes.txt", "--raise", "oserror"]) == 2
    line = _one_line_err(capsys)
    assert line == ("lmforge toy: error: /nonexistent-dir/notes.txt: "
                    "No such file or directory")


def test_an_unexpected_exception_is_an_internal_error(toy, capsys, monkeypatch):
    monkeypatch.setenv("LMFORGE_DEBUG", "0")
    assert main(["toy", "thing", "--raise", "value"]) == 1
    line = _one_line_err(capsys)
    assert line.startswith("lmforge toy: internal error: ValueError: bad thing")
    assert "LMFORGE_DEBUG=1" in line


def test_lmforge_errors_and_interrupts(toy, capsys, monkeypatch):
    monkeypatch.delenv("LMFORGE_DEBUG", raising=False)
    assert main(["toy", "data.txt", "--raise", "lmforge"]) == 2
    assert _one_line_err(capsys) == ("lmforge toy: error: data.txt: line 3 is empty; "
                                     "remove empty lines")
    assert main(["toy", "x", "--raise", "interrupt"]) == 130
    assert _one_line_err(capsys) == "lmforge toy: interrupted"


@pytest.mark.parametrize("exc, error", [("value", ValueError), ("oserror", FileNotFoundError)])
def test_lmforge_debug_lets_the_exception_through(toy, monkeypatch, exc, error):
    monkeypatch.setenv("LMFORGE_DEBUG", "1")
    with pytest.raises(error):
        main(["toy", "thing", "--raise", exc])


def test_argument_errors_exit_2_as_argparse_does(toy, capsys):
    for argv in ([], ["toy"], ["toy", "x", "--raise", "nonsense"], ["no-such-command"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
        assert "usage: lmforge" in capsys.readouterr().err


# eval: the measure follows the model directory's architecture ------------------------------


def _tiny_model_dir(root: Path, arch: str) -> Path:
    """An untrained 1-layer model of ``arch`` with a character tokenizer, saved as a model
    directory (enough for eval to run; the figures are those of random weights)."""
    from lmforge.modeldir import save_model_dir
    from lmforge.models import ModelConfig, build_model
    from lmforge.tokenizers import train_tokenizer
    from lmforge.tokenizers.special import SEQ2SEQ_SPECIAL_TOKENS

    corpus = root / "corpus.txt"
    corpus.write_text("abcdef ghij\n" * 5, encoding="utf-8")
    tok = train_tokenizer([corpus], kind="char",
                          special_tokens=SEQ2SEQ_SPECIAL_TOKENS if arch == "seq2seq" else None)
    cfg = ModelConfig(arch=arch, vocab_size=tok.get_vocab_size(), d_model=16, n_layer=1,
                      n_head=2, context_length=16, positional="learned")
    return save_model_dir(root / arch, build_model(cfg), tok)


def test_eval_scores_an_encoder_decoder_by_bleu(tmp_path, capsys):
    model = _tiny_model_dir(tmp_path, "seq2seq")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("abc\tcba\nfed\tdef\nab\tba\n", encoding="utf-8")
    out = tmp_path / "e.json"
    assert main(["eval", str(model), "--data", str(pairs), "--beam", "1", "--samples", "1",
                 "--json", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "BLEU" in shown and "chrF" in shown and "perplexity" not in shown
    figures = json.loads(out.read_text())
    assert figures["n"] == 3 and figures["beam_size"] == 1 and "perplexity" not in figures
    assert main(["eval", str(model), "--data", str(pairs), str(pairs)]) == 2
    assert "one --data file" in capsys.readouterr().err


def test_eval_scores_a_decoder_by_perplexity(tmp_path, capsys):
    model = _tiny_model_dir(tmp_path, "decoder")
    out = tmp_path / "e.json"
    assert main(["eval", str(model), "--data", str(tmp_path / "corpus.txt"), "--json",
                 str(out)]) == 0
    shown = capsys.readouterr().out
    assert "perplexity" in shown and "BLEU" not in shown
    figures = json.loads(out.read_text())
    assert figures["n_chars"] == len("abcdef ghij\n" * 5) and figures["perplexity"] > 1.0


def test_evaluate_model_dir_is_a_plain_task_function(tmp_path):
    """Callable without the CLI: the report goes to ``say``, the figures come back; and the
    task layer does not import the command line."""
    import subprocess
    import sys

    from lmforge.tasks.evaluate import evaluate_model_dir

    model = _tiny_model_dir(tmp_path, "decoder")
    lines: list[str] = []
    figures = evaluate_model_dir(str(model), [str(tmp_path / "corpus.txt")], max_chars=30,
                                 say=lines.append)
    assert figures["n_chars"] == 30 and lines[0].startswith(f"evaluated {model}")
    code = ("import sys, lmforge.tasks.evaluate; "
            "sys.exit(any(m.startswith('lmforge.cli') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
