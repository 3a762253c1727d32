"""The output guard, the output-directory lock and whole-directory replacement."""

import os

import pytest

from lmforge.errors import ConfigError, LMForgeError
from lmforge.files.guard import check_not_input, check_output, replace_directory
from lmforge.files.lock import lock_output, lock_path


def test_output_equal_to_inside_or_containing_an_input_is_refused_even_with_overwrite(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for out, word in ((src, " is the input"), (src / "sub", "is inside"),
                      (src / "new", "is inside"), (tmp_path, "contains")):
        for overwrite in (False, True):
            with pytest.raises(ConfigError, match=word) as e:
                check_output(out, [src], overwrite=overwrite)
            assert str(out) in str(e.value) and "\n" not in str(e.value)


def test_relative_and_dotted_paths_are_compared_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    with pytest.raises(ConfigError, match="is the input"):
        check_output("m/../m/", [str(tmp_path / "m")])


def test_one_way_check_allows_an_input_inside_the_output(tmp_path):
    check_not_input(tmp_path, [tmp_path / "data.txt"], both_ways=False)
    with pytest.raises(ConfigError):
        check_not_input(tmp_path / "data.txt" / "x", [tmp_path / "data.txt"], both_ways=False)


def test_existing_file_and_non_empty_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="existing file"):
        check_output(f, overwrite=True)
    d = tmp_path / "d"
    d.mkdir()
    assert check_output(d) == d  # empty: fine
    (d / "a").write_text("a")
    with pytest.raises(ConfigError, match="--overwrite"):
        check_output(d)
    assert check_output(d, overwrite=True) == d
    assert check_output(tmp_path / "new") == tmp_path / "new"


def test_file_outputs(tmp_path):
    f = tmp_path / "tok.json"
    check_output(f, kind="file")
    f.write_text("{}")
    with pytest.raises(ConfigError, match="already exists"):
        check_output(f, kind="file")
    check_output(f, kind="file", overwrite=True)
    with pytest.raises(ConfigError, match="is a directory"):
        check_output(tmp_path, kind="file", overwrite=True)


def test_lock_refuses_a_second_holder_and_is_released(tmp_path):
    out = tmp_path / "run"
    with lock_output(out):
        assert lock_path(out).read_text().strip() == str(os.getpid())
        with pytest.raises(ConfigError, match=f"in use by pid {os.getpid()}") as e, \
                lock_output(out):
            pass
        assert isinstance(e.value, LMForgeError) and str(out) in str(e.value)
    assert not lock_path(out).exists()
    assert not out.exists()  # the lock lives beside the directory, not in it
    with lock_output(out):  # free again
        pass


def test_replace_directory_appears_whole_and_keeps_the_old_one_on_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("old")

    def fail(tmp):
        tmp.mkdir()
        (tmp / "half").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        replace_directory(out, fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries left
    assert [p.name for p in out.iterdir()] == ["old"]

    def good(tmp):
        tmp.mkdir()
        (tmp / "new").write_text("new")

    assert replace_directory(out, good) == out
    assert [p.name for p in out.iterdir()] == ["new"]  # old contents gone, not mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_command_leaves_no_empty_output_directory(tmp_path):
    """A command that fails inside the lock removes the output directory it created while
    that is still empty, and never one that existed before or holds anything."""
    from lmforge.files.lock import lock_output

    new = tmp_path / "new"
    with pytest.raises(RuntimeError), lock_output(new):
        new.mkdir()
        raise RuntimeError("bad config")
    assert not new.exists()
    kept = tmp_path / "kept"
    with pytest.raises(RuntimeError), lock_output(kept):
        kept.mkdir()
        (kept / "checkpoint").write_text("work")
        raise RuntimeError("late failure")
    assert (kept / "checkpoint").read_text() == "work"
    before = tmp_path / "before"
    before.mkdir()
    with pytest.raises(RuntimeError), lock_output(before):
        raise RuntimeError("bad config")
    assert before.is_dir()
