"""Reading and writing files: atomic writes, model directories, checkpoints."""

from .atomic import atomic_write, atomic_write_text
from .model_dir import LoadedModel, load_model_dir, read_config, save_model_dir, write_model_dir

__all__ = ["LoadedModel", "atomic_write", "atomic_write_text", "load_model_dir", "read_config",
           "save_model_dir", "write_model_dir"]
