"""Hostile GGUF files, built byte by byte here: every one ends in one lmforge error naming the
file (CheckpointError for the file's structure and values, ConfigError for an unsupported
architecture), fast and without allocating from a size the file cannot back; fuzzed inputs
(random bytes, mutations and truncations of a valid file) end in such an error or a correct
import, never another exception, a hang or unbounded memory."""

import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from resource_bounds import resource_bounds as bounded

gguf = pytest.importorskip("gguf")

from lmforge.blocks import RotaryEmbedding  # noqa: E402
from lmforge.errors import CheckpointError, ConfigError, LMForgeError  # noqa: E402
from lmforge.interop.gguf import import_gguf  # noqa: E402
from lmforge.interop.gguf_scan import MAX_ITEMS, scan_gguf  # noqa: E402
from lmforge.modeldir import load_model_dir  # noqa: E402

U8, I32, U32, F32, BOOL, STR, ARR, U64 = 0, 5, 4, 6, 7, 8, 9, 10
FMT = {0: "<B", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q"}


# --- a GGUF writer, byte by byte ---------------------------------------------------------------

def s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def value(kind: int, v) -> bytes:
    if kind == STR:
        return s(v)
    if kind == ARR:
        inner, items = v
        return struct.pack("<IQ", inner, len(items)) + b"".join(value(inner, x) for x in items)
    return struct.pack(FMT[kind], v)


def kv(key: str | bytes, kind: int, v) -> bytes:
    return s(key) + struct.pack("<I", kind) + value(kind, v)


def header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def tensor_info(name: str, dims, kind: int, offset: int) -> bytes:
    return s(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, kind, offset)


def gguf_file(kvs: list[bytes], tensors: list[tuple[str, np.ndarray]] = ()) -> bytes:
    """A complete little-endian GGUF v3 file: the kv entries, then F32 tensors, 32-aligned."""
    infos, data = b"", b""
    for name, a in tensors:
        data += b"\0" * (-len(data) % 32)
        infos += tensor_info(name, list(reversed(a.shape)), 0, len(data))
        data += a.astype("<f4").tobytes()
    head = header(len(tensors), len(kvs)) + b"".join(kvs) + infos
    return head + b"\0" * (-len(head) % 32) + data


TOKENS = ["<|endoftext|>", "a", "b", "c", "d", "e", "\u0120", "\u0120a"]
D, HEADS, FF = 8, 2, 16


def model_kvs(**override) -> list[bytes]:
    """The metadata of a tiny llama (1 layer, width 8, 2 heads); ``override`` replaces values
    (None drops the key): ``block_count=(U64, 10**9)``."""
    entries = {"general.architecture": (STR, "llama"), "llama.block_count": (U32, 1),
               "llama.context_length": (U32, 64), "llama.embedding_length": (U32, D),
               "llama.feed_forward_length": (U32, FF), "llama.attention.head_count": (U32, HEADS),
               "llama.attention.head_count_kv": (U32, HEADS),
               "llama.attention.layer_norm_rms_epsilon": (F32, 1e-5),
               "tokenizer.ggml.model": (STR, "gpt2"), "tokenizer.ggml.pre": (STR, "default"),
               "tokenizer.ggml.tokens": (ARR, (STR, TOKENS)),
               "tokenizer.ggml.token_type": (ARR, (I32, [3] + [1] * (len(TOKENS) - 1))),
               "tokenizer.ggml.merges": (ARR, (STR, ["\u0120 a"])),
               "tokenizer.ggml.eos_token_id": (U32, 0)}
    for key, v in override.items():
        full = key if "." in key and key.split(".")[0] in ("general", "tokenizer") \
            else f"llama.{key}"
        entries[full] = v
    return [kv(k, *v) for k, v in entries.items() if v is not None]


def model_tensors(rng=np.random.default_rng(0)) -> list[tuple[str, np.ndarray]]:
    shapes = {"token_embd.weight": (len(TOKENS), D), "output_norm.weight": (D,),
              "blk.0.attn_norm.weight": (D,), "blk.0.ffn_norm.weight": (D,),
              "blk.0.attn_q.weight": (D, D), "blk.0.attn_k.weight": (D, D),
              "blk.0.attn_v.weight": (D, D), "blk.0.attn_output.weight": (D, D),
              "blk.0.ffn_gate.weight": (FF, D), "blk.0.ffn_up.weight": (FF, D),
              "blk.0.ffn_down.weight": (D, FF)}
    return [(n, rng.standard_normal(shape).astype(np.float32)) for n, shape in shapes.items()]


def write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def refused(path: Path, out: Path, match: str, kind=CheckpointError, seconds: int = 20) -> str:
    """Import ``path``: one ``kind`` error naming the file and matching ``match``."""
    with bounded(seconds), pytest.raises(kind, match=match) as e:
        import_gguf(path, out)
    message = str(e.value)
    assert str(path) in message and "\n" not in message
    return message


# --- the file built here is valid: the gguf package reads it as we do, and it imports ---------

def test_byte_built_model_is_valid_and_imports(tmp_path):
    path = write(tmp_path, gguf_file(model_kvs(), model_tensors()))
    reader, ours = gguf.GGUFReader(str(path)), scan_gguf(path)
    theirs = {n: f.contents() for n, f in reader.fields.items() if not n.startswith("GGUF.")}
    assert theirs == ours.metadata
    assert [(t.name, list(t.shape), t.data_offset) for t in reader.tensors] == \
        [(t.name, list(t.shape), t.data_offset) for t in ours.tensors]
    lm = load_model_dir(import_gguf(path, tmp_path / "lm"))
    assert lm.config.n_layer == 1 and lm.config.d_model == D and lm.config.vocab_size == 8


# --- the cases of the issue ---------------------------------------------------------------------

def test_array_claiming_2_40_items_is_refused_at_once(tmp_path):
    data = header(0, 1) + s("general") + struct.pack("<IIQ", ARR, U8, 1 << 40) + b"\0" * 33
    assert len(data) == 88
    path = write(tmp_path, data)
    start = time.perf_counter()
    message = refused(path, tmp_path / "lm", r"'general' claims 1099511627776 items.* at byte 43$", seconds=5)
    assert time.perf_counter() - start < 1, message
    assert "not a valid GGUF file" in message


def test_two_megabyte_metadata_array_is_fast_and_bounded(tmp_path):
    big = s("general.blob") + struct.pack("<IIQ", ARR, U8, 2_000_000) + bytes(2_000_000)
    strings = s("general.words") + struct.pack("<IIQ", ARR, STR, 200_000) + s("ab") * 200_000
    path = write(tmp_path, gguf_file([big, strings] + model_kvs(), model_tensors()))
    start = time.perf_counter()
    with bounded(20, headroom=512 << 20):
        scanned = scan_gguf(path)
    assert len(scanned.metadata["general.blob"]) == 2_000_000
    assert scanned.metadata["general.words"][-1] == "ab"
    assert time.perf_counter() - start < 3  # the gguf package's reader: ~21 s and 1.6 GB
    with bounded(60):
        import_gguf(path, tmp_path / "lm")  # extra keys are fine


def test_array_items_over_the_cap_are_refused(tmp_path):
    n = MAX_ITEMS + 1
    data = header(0, 1) + s("general.blob") + struct.pack("<IIQ", ARR, U8, n) + bytes(n)
    refused(write(tmp_path, data), tmp_path / "lm", f"claims {n} items; the metadata may hold")


@pytest.mark.parametrize("n_tensors,n_kv,what", [
    (0, 1 << 63, "metadata count 9223372036854775808"), (1 << 63, 0, "tensor count"),
    (0, 10**6 + 1, "metadata count"), (10**6 + 1, 0, "tensor count"),
    (0, 5, "metadata count 5 .* more than 40 bytes can hold")])
def test_huge_counts_are_refused(tmp_path, n_tensors, n_kv, what):
    path = write(tmp_path, header(n_tensors, n_kv) + bytes(40))
    refused(path, tmp_path / "lm", what)


HOSTILE = {  # name: (file bytes, the error's pattern)
    "empty": (b"", "0 bytes long, shorter than a GGUF header"),
    "not gguf": (b"PK\3\4" + bytes(40), "the magic is b'PK"),
    "version 1": (header(0, 0, version=1), "version 1 is not supported"),
    "big-endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian file"),
    "key longer than the file": (header(0, 1) + struct.pack("<Q", 1000) + bytes(8),
                                 "key of metadata entry 0 .*needs 1000 bytes, only 8"),
    "key over the cap": (header(0, 1) + struct.pack("<Q", 1 << 17) + bytes(1 << 17),
                         "131072 bytes long, more than the cap"),
    "key not utf-8": (header(0, 1) + kv(b"\xff\xfe", U8, 1), "is not UTF-8"),
    "empty key": (header(0, 1) + kv("", U8, 1) + bytes(8), "empty key"),
    "duplicate key": (header(0, 2) + kv("k", U8, 1) + kv("k", U8, 2), "'k' appears twice"),
    "unknown value type": (header(0, 1) + s("k") + struct.pack("<I", 13) + bytes(8),
                           "unknown value type 13"),
    "unknown array type": (header(0, 1) + s("k") + struct.pack("<IIQ", ARR, 99, 1) + bytes(8),
                           "array of the unknown value type 99"),
    "string array too long": (header(0, 1) + s("k") + struct.pack("<IIQ", ARR, STR, 10)
                              + bytes(40), "claims 10 items of type STRING"),
    "nested too deep": (header(0, 1) + s("k") + struct.pack("<I", ARR)
                        + struct.pack("<IQ", ARR, 1) * 6 + struct.pack("<IQ", U8, 0),
                        "nests arrays more than 4 deep"),
    "bad alignment": (header(0, 1) + kv("general.alignment", U32, 24), "general.alignment 24"),
    "alignment of another type": (header(0, 1) + kv("general.alignment", STR, "32"),
                                  "general.alignment '32'"),
    "five dims": (header(1, 0) + tensor_info("t", [1] * 5, 0, 0), "5 dimensions; allowed: 1 to 4"),
    "zero dim": (header(1, 0) + tensor_info("t", [0], 0, 0), r"dimensions \[0\]"),
    "unknown ggml type": (header(1, 0) + tensor_info("t", [4], 77, 0), "unknown ggml type 77"),
    "partial block": (header(1, 0) + tensor_info("t", [31], 8, 0), "31 values is not a whole"),
    "misaligned offset": (header(1, 0) + tensor_info("t", [4], 0, 3), "offset 3 is not a multiple"),
    "data past the end": (header(1, 0) + tensor_info("t", [1 << 40], 0, 0),
                          "does not fit in the"),
    "data offset past the end": (header(1, 0) + tensor_info("t", [4], 0, 1 << 62) + bytes(64),
                                 "does not fit in the"),
    "aliased tensors": (header(2, 0) + tensor_info("t", [8], 0, 0) + tensor_info("u", [8], 0, 0)
                        + bytes(40), "tensor 'u' .*does not fit"),
    "duplicate tensor": (header(2, 0) + tensor_info("t", [1], 0, 0) + tensor_info("t", [1], 0, 0)
                         + bytes(64), "'t' appears twice"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_structure(tmp_path, name):
    data, match = HOSTILE[name]
    message = refused(write(tmp_path, data), tmp_path / "lm", match)
    assert "not a valid GGUF file" in message or "shorter than" in message


def test_every_truncation_of_a_valid_file_is_one_error(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "full.gguf"), "llama")
    for add, v in ((w.add_context_length, 64), (w.add_embedding_length, D), (w.add_block_count, 1),
                   (w.add_feed_forward_length, FF), (w.add_head_count, HEADS)):
        add(v)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(TOKENS)
    w.add_token_merges(["\u0120 a"])
    for name, a in model_tensors():
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    full = (tmp_path / "full.gguf").read_bytes()
    import_gguf(tmp_path / "full.gguf", tmp_path / "lm")  # the whole file imports
    path = tmp_path / "cut.gguf"
    with bounded(60):
        for n in range(len(full)):
            path.write_bytes(full[:n])
            with pytest.raises(CheckpointError, match="cut.gguf: not a valid GGUF file|shorter"):
                import_gguf(path, tmp_path / "never")
    assert not (tmp_path / "never").exists()


# --- values: each a clear error naming the key, before anything is allocated --------------------

VALUES = {  # name: (metadata override, pattern)
    "head_count 0": ({"attention.head_count": (U32, 0)}, "llama.attention.head_count = 0 is out"),
    "block_count 1e9": ({"block_count": (U64, 10**9)}, "llama.block_count = 1000000000 is out"),
    "context_length 4e9": ({"context_length": (U64, 4 * 10**9)},
                           "llama.context_length = 4000000000 is out of range; allowed: an "
                           "integer from 1 to 1048576"),
    "embedding_length 2^40": ({"embedding_length": (U64, 1 << 40)}, "llama.embedding_length"),
    "head_count not dividing": ({"attention.head_count": (U32, 3),
                                 "attention.head_count_kv": (U32, 3)}, "= 3 must divide"),
    "head_count_kv not dividing": ({"attention.head_count_kv": (U32, 3)}, "head_count_kv"),
    "head_count_kv 0": ({"attention.head_count_kv": (U32, 0)}, "head_count_kv = 0"),
    "head_count a string": ({"attention.head_count": (STR, "2")}, "head_count = '2'"),
    "missing block_count": ({"block_count": None}, "has no llama.block_count"),
    "eps nan": ({"attention.layer_norm_rms_epsilon": (F32, float("nan"))}, "epsilon = nan"),
    "key_length odd": ({"attention.key_length": (U32, 3)}, "odd head dimension"),
    "rope dims a bool": ({"rope.dimension_count": (BOOL, 1)}, "rope.dimension_count = True"),
    "missing token list": ({"tokenizer.ggml.tokens": None}, "no tokenizer.ggml.tokens"),
    "token list of ints": ({"tokenizer.ggml.tokens": (ARR, (U32, [1, 2]))},
                           "tokenizer.ggml.tokens must be a list of 1 to"),
    "empty token list": ({"tokenizer.ggml.tokens": (ARR, (STR, []))}, "tokenizer.ggml.tokens"),
    "token types short": ({"tokenizer.ggml.token_type": (ARR, (I32, [1]))},
                          "token_type must be a list of 8 integers"),
    "merge without a space": ({"tokenizer.ggml.merges": (ARR, (STR, ["ab"]))}, "merges must be"),
    "merge of unknown tokens": ({"tokenizer.ggml.merges": (ARR, (STR, ["x y"]))},
                                "cannot be converted: the file is malformed"),
    "tokenizer model a number": ({"tokenizer.ggml.model": (U32, 1)}, "ggml.model must be a string"),
    "pre a list": ({"tokenizer.ggml.pre": (ARR, (STR, ["x"]))}, "ggml.pre must be a string"),
    "linear scaling without factor": ({"rope.scaling.type": (STR, "linear")},
                                      "rope.scaling.factor = None"),
}


@pytest.mark.parametrize("name", VALUES)
def test_bad_values_name_the_key(tmp_path, name):
    override, match = VALUES[name]
    path = write(tmp_path, gguf_file(model_kvs(**override), model_tensors()))
    refused(path, tmp_path / "lm", match)
    assert not (tmp_path / "lm").exists()


def test_unsupported_architecture_names_the_file(tmp_path):
    path = write(tmp_path, gguf_file(model_kvs(**{"general.architecture": (STR, "falcon")})))
    refused(path, tmp_path / "lm", "GGUF architecture 'falcon' is not supported", ConfigError)
    path = write(tmp_path, gguf_file(model_kvs(**{"general.architecture": (U32, 7)})))
    refused(path, tmp_path / "lm", "GGUF architecture 7 is not supported", ConfigError)


@pytest.mark.parametrize("name,shape,match", [
    ("token_embd.weight", (len(TOKENS) - 1, D), "token_embd.weight has shape"),
    ("token_embd.weight", (len(TOKENS), D + 1), "token_embd.weight has shape"),
    ("blk.0.attn_q.weight", (D - 2, D), r"attn_q.weight has shape \[8, 6\]"),
    ("blk.0.attn_k.weight", (D + 2, D), "attn_k.weight has shape"),
    ("blk.0.ffn_up.weight", (FF, D + 1), r"wrong shape .*up_proj.weight \(16, 9\)"),
])
def test_bad_tensor_shapes(tmp_path, name, shape, match):
    tensors = [(n, np.zeros(shape, np.float32) if n == name else a) for n, a in model_tensors()]
    with bounded(30):
        with pytest.raises(LMForgeError, match=match):
            import_gguf(write(tmp_path, gguf_file(model_kvs(), tensors)), tmp_path / "lm")


def test_missing_embedding_tensor(tmp_path):
    tensors = [(n, a) for n, a in model_tensors() if n != "token_embd.weight"]
    refused(write(tmp_path, gguf_file(model_kvs(), tensors)), tmp_path / "lm",
            "has no token_embd.weight tensor")


# --- RoPE tables: built for the positions used, not for the declared context -----------------

def test_long_declared_context_allocates_small_rope_tables(tmp_path):
    path = write(tmp_path, gguf_file(model_kvs(context_length=(U32, 1 << 20)), model_tensors()))
    lm = load_model_dir(import_gguf(path, tmp_path / "lm"))
    assert lm.config.context_length == 1 << 20
    rope = lm.model.backbone.layers[0].attn.rope
    assert rope.cos.shape[0] <= RotaryEmbedding.PREBUILT


def test_rope_tables_grow_exactly_and_stay_float32_after_a_cast():
    rope = RotaryEmbedding(16, 1 << 20)
    full = RotaryEmbedding(16, 16)
    full._build(10_000)  # the tables for every position at once
    assert rope.cos.shape[0] == RotaryEmbedding.PREBUILT and full.cos.shape[0] == 10_000
    rope.to(torch.bfloat16)
    x, pos = torch.randn(1, 2, 3, 16), torch.tensor([0, 5000, 9999])
    got = rope(x, pos)
    assert got.dtype == torch.float32 and rope.cos.dtype == torch.float32
    torch.testing.assert_close(got, full(x, pos))


# --- fuzzing -----------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=3000, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
FIGURES: dict[str, tuple[int, float, dict]] = {}


def _outcome(path: Path, out: Path, seen: dict) -> None:
    """Import: success or an lmforge error naming the file; anything else fails the test."""
    try:
        import_gguf(path, out)
        seen["imported"] = seen.get("imported", 0) + 1
    except LMForgeError as e:
        assert str(path) in str(e) and "\n" not in str(e), str(e)
        seen[type(e).__name__] = seen.get(type(e).__name__, 0) + 1


def _run(name: str, fuzz, seen: dict) -> None:
    start = time.perf_counter()
    with bounded(120):
        fuzz()
    FIGURES[name] = (sum(seen.values()), time.perf_counter() - start, seen)
    print(f"gguf fuzz {name}: {sum(seen.values())} inputs in {FIGURES[name][1]:.1f} s {seen}")


def test_fuzz_random_bytes_after_the_magic(tmp_path):
    seen: dict = {}

    @FUZZ
    @given(st.binary(max_size=600), st.sampled_from([2, 3]))
    def fuzz(tail, version):
        _outcome(write(tmp_path, b"GGUF" + struct.pack("<I", version) + tail), tmp_path / "x", seen)

    _run("random bytes after the magic", fuzz, seen)
    assert sum(seen.values()) >= 300


def test_fuzz_random_headers(tmp_path):
    """Small counts and random entries: valid-looking structure with random values."""
    seen: dict = {}
    entry = st.one_of(
        st.builds(kv, st.sampled_from(["general.architecture", "llama.block_count", "k",
                                       "tokenizer.ggml.tokens", "general.alignment"]),
                  st.sampled_from([U32, U64]), st.integers(0, 2**32 - 1)),
        st.builds(lambda k, v: kv(k, STR, v), st.sampled_from(["general.architecture", "k"]),
                  st.sampled_from(["llama", "qwen2", "", "x"])),
        st.builds(lambda k, n: s(k) + struct.pack("<IIQ", ARR, STR, n),
                  st.text(max_size=4), st.integers(0, 2**64 - 1)),
        st.binary(max_size=40))

    @FUZZ
    @given(st.integers(0, 4), st.integers(0, 2**64 - 1), st.lists(entry, max_size=6))
    def fuzz(n_kv, n_tensors, entries):
        data = header(n_tensors % 5 if n_tensors < 2**63 else n_tensors, n_kv) + b"".join(entries)
        _outcome(write(tmp_path, data), tmp_path / "x", seen)

    _run("random headers", fuzz, seen)


def test_fuzz_mutations_of_a_valid_file(tmp_path):
    """Bytes of the header and metadata of a valid model overwritten, inserted or cut."""
    valid = gguf_file(model_kvs(), model_tensors())
    end = scan_gguf(write(tmp_path, valid, "valid.gguf")).data_offset
    seen: dict = {}

    @settings(FUZZ, max_examples=400)
    @given(st.lists(st.tuples(st.integers(0, end - 1), st.binary(min_size=1, max_size=8),
                              st.sampled_from(["put", "insert", "cut"])), min_size=1, max_size=4))
    def fuzz(edits):
        data = bytearray(valid)
        for at, raw, how in edits:
            if how == "put":
                data[at:at + len(raw)] = raw
            elif how == "insert":
                data[at:at] = raw
            else:
                del data[at:at + len(raw)]
        with tempfile.TemporaryDirectory(dir=tmp_path) as out:
            _outcome(write(tmp_path, bytes(data)), Path(out) / "lm", seen)

    _run("mutations of a valid file", fuzz, seen)
    assert len(seen) >= 2  # both refusals and imports happened
