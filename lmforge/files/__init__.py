"""Low-level file helpers below every other layer: atomic writes and bounded safetensors
reading. Nothing here knows about models."""

from .atomic import atomic_write, atomic_write_text, sweep_stale_temporaries
from .safetensors import read_safetensors, stream_tensors

__all__ = ["atomic_write", "atomic_write_text", "read_safetensors", "stream_tensors",
           "sweep_stale_temporaries"]
