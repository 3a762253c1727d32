"""train.dtype: which autocast precision a run uses on each device."""

import pytest
import torch

from lmforge.training import precision
from lmforge.training.precision import autocast_dtype


@pytest.mark.parametrize(("name", "dtype"), [("float32", torch.float32),
                                             ("bfloat16", torch.bfloat16),
                                             ("float16", torch.float16)])
def test_an_explicit_precision_is_taken_as_given_on_any_device(name, dtype):
    assert autocast_dtype(name, torch.device("cpu")) is dtype


@pytest.mark.parametrize(("native", "dtype"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_a_cpu_uses_bf16_only_where_it_is_native(monkeypatch, native, dtype):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert autocast_dtype("auto", torch.device("cpu")) is dtype


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, tmp_path):
    flags = tmp_path / "cpuinfo"
    real_open = open

    def fake_open(path, *a, **k):
        return real_open(flags if path == "/proc/cpuinfo" else path, *a, **k)

    monkeypatch.setattr("builtins.open", fake_open)
    flags.write_text("processor: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert precision.cpu_has_native_bf16()
    flags.write_text("processor: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert not precision.cpu_has_native_bf16()
    flags.unlink()  # no /proc (macOS): not native
    assert not precision.cpu_has_native_bf16()
