"""Data loading: read text sources, tokenise and cache them, and cut them into batches."""

from .batches import batch_offsets, epoch_indices, eval_batches, n_eval_windows, sample_batch
from .builtin import describe_stdlib_corpus, stdlib_corpus_files
from .encode import EncodedTexts, encode_texts, truncate
from .labeled import LabeledData, LabelVocab, read_labeled
from .pairs import SentencePairs, SpecialIds, pack_pair, split_sentences
from ..files.text import Document, count_chars_bytes, list_files, read_documents, read_text_file
from .tokenized import TokenSplits, build_token_splits, encode_stream, token_dtype

__all__ = [
    "Document",
    "EncodedTexts",
    "LabelVocab",
    "LabeledData",
    "SentencePairs",
    "SpecialIds",
    "TokenSplits",
    "batch_offsets",
    "build_token_splits",
    "count_chars_bytes",
    "describe_stdlib_corpus",
    "encode_stream",
    "encode_texts",
    "epoch_indices",
    "eval_batches",
    "list_files",
    "n_eval_windows",
    "pack_pair",
    "read_documents",
    "read_labeled",
    "read_text_file",
    "sample_batch",
    "split_sentences",
    "stdlib_corpus_files",
    "token_dtype",
    "truncate",
]

from .parallel import ParallelCorpus, language_files, read_parallel  # noqa: E402  (translation)
from .pair_batches import FilterReport, TokenBatches, collate, filter_pairs  # noqa: E402

__all__ += [
    "FilterReport",
    "ParallelCorpus",
    "TokenBatches",
    "collate",
    "filter_pairs",
    "language_files",
    "read_parallel",
]

from .chat import (  # noqa: E402  (instruction tuning: chat / prompt-response data)
    CHATML_TOKENS,
    ChatTemplate,
    SFTData,
    SFTExample,
    builtin_instructions_path,
    collate_sft,
    encode_conversation,
    load_sft_data,
    pack_examples,
    read_sft_jsonl,
    sft_batch_indices,
    sft_batches,
)

__all__ += [
    "CHATML_TOKENS",
    "ChatTemplate",
    "SFTData",
    "SFTExample",
    "builtin_instructions_path",
    "collate_sft",
    "encode_conversation",
    "load_sft_data",
    "pack_examples",
    "read_sft_jsonl",
    "sft_batch_indices",
    "sft_batches",
]
