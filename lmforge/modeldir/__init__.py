"""The model directory: the one format every lmforge command reads and writes (config.json,
model.safetensors, tokenizer.json, meta.json — the last a typed :class:`ModelMeta`)."""

from .average import average_model_dirs
from .directory import (LoadedModel, load_model_dir, read_config, read_meta, save_model_dir,
                        update_meta, write_model_dir)
from .meta import (AveragedInput, ClassifierInfo, Generation, ModelMeta, SentenceEmbedding,
                   Seq2SeqTokenNames, Source, as_meta, meta_from_dict, meta_to_dict)

__all__ = ["AveragedInput", "average_model_dirs", "ClassifierInfo", "Generation", "LoadedModel", "ModelMeta",
           "SentenceEmbedding", "Seq2SeqTokenNames", "Source", "as_meta", "load_model_dir",
           "meta_from_dict", "meta_to_dict", "read_config", "read_meta", "save_model_dir",
           "update_meta", "write_model_dir"]
