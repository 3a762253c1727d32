"""Low-level file helpers below every other layer: atomic writes and bounded safetensors
reading, the output guard and the output-directory lock. Nothing here knows about models."""

from .atomic import atomic_write, atomic_write_text, sweep_stale_temporaries
from .guard import check_not_input, check_output
from .lock import lock_output
from .safetensors import read_safetensors, stream_tensors

__all__ = ["atomic_write", "atomic_write_text", "check_not_input", "check_output",
           "lock_output", "read_safetensors", "stream_tensors", "sweep_stale_temporaries"]
