"""Hostile safetensors files: each bad header is one CheckpointError naming the file, nothing
is allocated from a size the file cannot back, and fuzzed inputs (random bytes, mutations of
a valid file, random headers) end in a CheckpointError or a correct load, nothing else."""

import json
import struct
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from lmforge.errors import CheckpointError
from lmforge.files.safetensors import (MAX_HEADER_BYTES, read_header, read_safetensors,
                                       stream_tensors)

TENSORS = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
           "b": torch.tensor([1, 2, 3], dtype=torch.int64), "c": torch.zeros(0, 4)}
VALID = save(TENSORS)


def build(header: object, data: bytes = b"", length: int | None = None) -> bytes:
    """A file made byte by byte: the length (of the JSON, unless ``length`` says otherwise),
    the header as JSON (or raw bytes) and the data area."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def stream_all(path: Path) -> dict[str, torch.Tensor]:
    header, read, fh = stream_tensors(path)
    with fh:
        return {name: read(name) for name in header}


def load_both(path: Path) -> list[dict[str, torch.Tensor]]:
    return [read_safetensors(path), stream_all(path)]


def test_a_valid_file_loads_the_same_both_ways(tmp_path):
    f = tmp_path / "m.safetensors"
    f.write_bytes(VALID)
    for got in load_both(f):
        assert got.keys() == TENSORS.keys()
        for k, t in TENSORS.items():
            assert torch.equal(got[k], t), k


ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
HOSTILE = {
    "shorter than the length field": b"\x01\x02",
    "header length past the end": build({"a": ENTRY}, bytes(8), length=2**63),
    "header length over the cap": build(b" " * 16, length=MAX_HEADER_BYTES + 1),
    "header not UTF-8": build(b"\xff\xfe{}"),
    "header not JSON": build(b"{not json"),
    "header a JSON list": build([1, 2, 3]),
    "deeply nested header": build(b"[" * 100_000 + b"]" * 100_000),
    "duplicate tensor names": build(b'{"a": %s, "a": %s}' % ((json.dumps(ENTRY).encode(),) * 2),
                                    bytes(8)),
    "metadata not an object": build({"__metadata__": [1]}),
    "entry not an object": build({"a": 5}),
    "entry with an extra key": build({"a": {**ENTRY, "x": 1}}, bytes(8)),
    "unknown dtype": build({"a": {**ENTRY, "dtype": "F128"}}, bytes(8)),
    "negative dimension": build({"a": {**ENTRY, "shape": [-2]}}, bytes(8)),
    "float dimension": build({"a": {**ENTRY, "shape": [2.0]}}, bytes(8)),
    "huge shape": build({"a": {**ENTRY, "shape": [2**40, 2**40]}}, bytes(8)),
    "rank too high": build({"a": {**ENTRY, "shape": [1] * 40, "data_offsets": [0, 4]}}, bytes(4)),
    "offsets past the data": build({"a": {**ENTRY, "data_offsets": [0, 2**62]}}, bytes(8)),
    "offsets reversed": build({"a": {**ENTRY, "data_offsets": [8, 0]}}, bytes(8)),
    "offsets not integers": build({"a": {**ENTRY, "data_offsets": ["0", "8"]}}, bytes(8)),
    "size does not match the shape": build({"a": {**ENTRY, "shape": [3]}}, bytes(8)),
    "overlapping tensors": build({"a": ENTRY, "b": {**ENTRY, "data_offsets": [4, 12]}}, bytes(12)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_is_one_checkpoint_error_naming_it(tmp_path, case, bounded):
    f = tmp_path / "model.safetensors"
    f.write_bytes(HOSTILE[case])
    with bounded(30):
        for load in (read_safetensors, stream_all):
            with pytest.raises(CheckpointError) as err:
                load(f)
            message = str(err.value)
            assert str(f) in message and "\n" not in message, message


def test_reading_an_unknown_tensor_name_is_a_checkpoint_error(tmp_path):
    f = tmp_path / "m.safetensors"
    f.write_bytes(VALID)
    header, read, fh = stream_tensors(f)
    with fh, pytest.raises(CheckpointError, match="no tensor 'zz'"):
        read("zz")


def test_missing_file_is_a_checkpoint_error(tmp_path):
    for load in (read_safetensors, stream_all):
        with pytest.raises(CheckpointError, match="missing.safetensors"):
            load(tmp_path / "missing.safetensors")


# -- fuzzing --------------------------------------------------------------------------------
FUZZ_SETTINGS = settings(max_examples=500, deadline=2000, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                HealthCheck.too_slow])
FIGURES: dict[str, tuple[int, float]] = {}
LOADS = {"ok": 0}


def check_file(path: Path, data: bytes) -> None:
    """Both readers end in a CheckpointError or a load whose every tensor holds exactly the
    bytes its header entry points at; anything else fails the test."""
    path.write_bytes(data)
    for load in (read_safetensors, stream_all):
        try:
            got = load(path)
        except CheckpointError as e:
            assert str(path) in str(e)
            continue
        with open(path, "rb") as fh:
            header, base = read_header(fh, path)
        assert got.keys() == header.keys()
        LOADS["ok"] += 1
        for name, t in got.items():
            start, end = header[name]["data_offsets"]
            assert list(t.shape) == header[name]["shape"]
            assert t.contiguous().view(torch.uint8).reshape(-1).numpy().tobytes() == \
                data[base + start: base + end]


def run_fuzz(name: str, bounded, fuzz, seen: list) -> None:
    """Run the hypothesis test ``fuzz`` (which appends to ``seen`` per input) inside the
    address-space and time bounds; print how many inputs it tried and how long it took."""
    t0, loads = time.perf_counter(), LOADS["ok"]
    with bounded(120):
        fuzz()
    FIGURES[name] = (len(seen), time.perf_counter() - t0)
    print(f"\nfuzz safetensors {name}: {len(seen)} inputs in {FIGURES[name][1]:.1f} s, "
          f"{LOADS['ok'] - loads} correct loads")
    assert len(seen) >= 50


def test_fuzz_random_bytes(tmp_path, bounded):
    f = tmp_path / "fuzz.safetensors"
    seen = []

    @FUZZ_SETTINGS
    @given(st.one_of(st.binary(max_size=300),
                     st.tuples(st.integers(0, 400), st.binary(max_size=300)).map(
                         lambda t: struct.pack("<Q", t[0]) + t[1])))
    def fuzz(data):
        seen.append(1)
        check_file(f, data)

    run_fuzz("random bytes", bounded, fuzz, seen)


MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, len(VALID))),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, len(VALID) - 1),
                                                  st.integers(1, 255)), min_size=1, max_size=4)),
    st.tuples(st.just("length"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("insert"), st.tuples(st.integers(0, len(VALID)), st.binary(max_size=8))),
)


def mutate(kind: str, arg) -> bytes:
    data = bytearray(VALID)
    if kind == "truncate":
        return bytes(data[:arg])
    if kind == "flip":
        for pos, mask in arg:
            data[pos] ^= mask
        return bytes(data)
    if kind == "length":
        return struct.pack("<Q", arg) + bytes(data[8:])
    pos, extra = arg
    return bytes(data[:pos]) + extra + bytes(data[pos:])


def test_fuzz_mutations_of_a_valid_file(tmp_path, bounded):
    f = tmp_path / "fuzz.safetensors"
    seen = []

    @FUZZ_SETTINGS
    @given(MUTATION)
    def fuzz(mutation):
        seen.append(1)
        check_file(f, mutate(*mutation))

    run_fuzz("mutations", bounded, fuzz, seen)


BIG = st.integers(-2, 2**70) | st.integers(0, 16)
HEADER_ENTRY = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "X9"]),
    "shape": st.lists(BIG, max_size=4) | st.just("2"),
    "data_offsets": st.lists(BIG, min_size=2, max_size=2) | st.lists(BIG, max_size=3),
}) | st.integers() | st.none()


def test_fuzz_random_headers(tmp_path, bounded):
    f = tmp_path / "fuzz.safetensors"
    seen = []

    @FUZZ_SETTINGS
    @given(st.dictionaries(st.text(max_size=4), HEADER_ENTRY, max_size=4), st.binary(max_size=64),
           st.integers(-1, 3))
    def fuzz(header, data, skew):
        seen.append(1)
        raw = json.dumps(header).encode()
        check_file(f, build(raw, data, length=max(0, len(raw) + skew) if skew else None))

    run_fuzz("random headers", bounded, fuzz, seen)


def test_the_fuzz_bound_stops_a_large_allocation(bounded):
    """The address-space bound the fuzz tests run under is real: 2 GiB cannot be allocated."""
    with bounded(30):
        with pytest.raises(MemoryError):
            bytearray(2**31)
    assert len(bytearray(2**31 // 8)) == 2**28  # and it is lifted afterwards
