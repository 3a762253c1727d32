"""Hypothesis strategies shared by the parser fuzz tests: byte-level mutations of a valid
seed file, and arbitrary JSON values."""

from hypothesis import strategies as st

JUNK = [b"\x00", b"\xff\xfe", b"\"", b"'", b"[", b"]", b"{", b"}", b"=", b",", b"\n", b"\r",
        b"\t", b"#", b"\\", b"\\u00", b"1e999", b"-", b"nan", b"inf", b"true", b"null", b"[[[[",
        b"\xc3", b"\xed\xa0\x80", b"\x1f\x8b\x08"]


@st.composite
def mutated(draw, seed: bytes, max_ops: int = 6) -> bytes:
    """``seed`` with 1..max_ops random edits: flip, insert (junk or random bytes), delete,
    duplicate a slice, truncate."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup", "truncate"]))
        i = draw(st.integers(0, len(data)))
        if op == "flip" and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.one_of(st.sampled_from(JUNK), st.binary(max_size=8)))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "dup":
            data[i:i] = data[i:i + draw(st.integers(1, 32))] * draw(st.integers(1, 4))
        elif op == "truncate":
            del data[i:]
    return bytes(data)


def file_bytes(seed: bytes):
    """A mutated ``seed`` (mostly), an untouched one, or random bytes."""
    return st.one_of(mutated(seed), mutated(seed), mutated(seed), st.just(seed),
                     st.binary(max_size=200))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
"""Any JSON value (floats include NaN and infinity, which json.dumps writes as NaN/Infinity)."""
