"""The typed model config: every architecture in lmforge is one of these, serialised to
``config.json`` in a model directory."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from ..blocks.attention_backends import backend_settings, get_backend, unknown_backend_message
from ..blocks.positions import ROPE_SCALING
from ..errors import ConfigError


@dataclass
class ModelConfig:
    arch: Literal["decoder", "encoder", "seq2seq",
                  "patchtst", "timestep", "lstm_forecaster",
                  "vit", "image_cnn", "rnn", "lstm", "gru", "text_cnn"] = "decoder"
    """Which model to assemble: ``decoder`` = causal language model (GPT, Llama); ``encoder``
    = bidirectional encoder with masked-LM / next-sentence heads (BERT); ``seq2seq`` =
    encoder–decoder with cross-attention (the original Transformer, MarianMT); forecasters
    (docs/forecasting.md): ``patchtst``, ``timestep``, ``lstm_forecaster``; images
    (docs/baselines.md): ``vit`` (Vision Transformer), ``image_cnn`` (small ResNet); baselines
    for text: ``rnn``/``lstm``/``gru`` (classifier with heads = "classifier", else a causal LM),
    ``text_cnn`` (classifier)."""
    vocab_size: int = 0
    """Output/input vocabulary; 0 = take it from the tokenizer."""
    context_length: int = 256
    """Longest sequence (in tokens) the model attends over."""
    d_model: int = 384
    """Width of the residual stream (embedding size)."""
    n_layer: int = 6
    """Blocks in the stack (seq2seq: in the decoder)."""
    encoder_layers: int | None = None
    """seq2seq only: blocks in the encoder; None = n_layer."""
    n_head: int = 6
    n_kv_head: int | None = None
    """Key/value heads: None = n_head (multi-head); fewer = grouped-query; 1 = multi-query."""
    head_dim: int | None = None
    """Per-head width; None = d_model / n_head."""
    d_ff: int | None = None
    """Feed-forward width; None = 4 * d_model (8/3 * d_model rounded up to 64 for the
    gated activations)."""
    activation: Literal["relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu",
                        "geglu_tanh"] = "gelu"
    """Feed-forward non-linearity. The gated ones use three matrices, down(act(gate(x)) * up(x)):
    ``swiglu`` (silu gate, Llama), ``geglu`` (exact GELU gate), ``geglu_tanh`` (tanh-approximate
    GELU gate, Gemma)."""
    norm: Literal["layernorm", "rmsnorm", "rmsnorm_1p"] = "layernorm"
    """``layernorm``, ``rmsnorm``, or ``rmsnorm_1p``: RMSNorm scaled by (1 + weight), the weight
    starting at zero (Gemma)."""
    norm_eps: float = 1e-5
    qk_norm: bool = False
    """RMSNorm (the ``norm_eps``, a learned weight of head_dim) on each head's queries and keys
    before RoPE (Qwen3)."""
    prenorm: bool = True
    """True: x + f(norm(x)) (GPT-2, Llama). False: norm(x + f(x)) (original Transformer)."""
    positional: Literal["learned", "sinusoidal", "rope", "alibi", "relative", "t5_relative",
                        "none"] = "learned"
    """Position information: ``learned``/``sinusoidal`` vectors added to the embeddings,
    ``rope`` rotated into queries and keys, ``alibi`` a distance penalty on the scores, or
    ``relative``: Transformer-XL's relative encoding (decoders; docs/attention.md), or
    ``t5_relative``: T5's learned per-head bias over bucketed distances, one table per stack."""
    relative_buckets: int = 32
    """``positional = "t5_relative"`` (T5): distance buckets of the learned per-head score bias;
    half hold exact distances, half log-spaced ranges (a bidirectional stack splits them
    between earlier and later keys)."""
    relative_max_distance: int = 128
    """``positional = "t5_relative"``: distances from this on share the last bucket."""
    memory_length: int = 0
    """Transformer-XL (needs positional = "relative"): each layer keeps its inputs on the last
    ``memory_length`` positions of the previous segments (no gradient through them) and attends
    over [memory; current segment]; training feeds consecutive segments. 0 = no memory."""
    reversible: bool = False
    """Reversible residual layers (RevNet/Reformer): y1 = x1 + Attn(x2), y2 = x2 + FF(y1) on a
    doubled residual stream; the backward pass recomputes activations instead of storing
    them. Needs prenorm = true and dropout = 0."""
    ff_chunks: int = 1
    """Run the feed-forward over this many pieces of the sequence (Reformer's chunking: the
    same values, a smaller hidden activation at a time); 1 = all at once."""
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    """RoPE frequency scaling (as in Hugging Face): {rope_type = "linear", factor = F} or
    {rope_type = "llama3", factor, low_freq_factor, high_freq_factor,
    original_max_position_embeddings}; None = plain RoPE."""
    bias: bool = True
    """Biases in the linear layers and LayerNorms."""
    attn_bias: bool | None = None
    """Biases in the attention projections (q/k/v/o); None = ``bias``."""
    ff_bias: bool | None = None
    """Biases in the feed-forward projections; None = ``bias``."""
    tie_embeddings: bool = True
    """Share the token embedding matrix with the output projection."""
    share_embeddings: bool = True
    """seq2seq only: one token-embedding table for encoder and decoder (a joint source/target
    vocabulary); false = separate tables."""
    src_vocab_size: int = 0
    """seq2seq only: the source vocabulary when the source has its own tokenizer (then
    share_embeddings = false); 0 = vocab_size (one joint tokenizer)."""
    scale_embeddings: bool = False
    """Multiply token embeddings by sqrt(d_model) (the original Transformer, MarianMT)."""
    output_bias: bool = False
    """A bias on the output projection (MarianMT's final_logits_bias)."""
    dropout: float = 0.0
    """Dropout on embeddings, attention weights and residual branches (training only)."""
    attention: str = "auto"
    """Attention backend, by registered name (docs/attention.md): ``auto`` = ``fused`` or
    ``explicit``, whichever was measured faster for the call (CPU rules); ``fused`` = torch's
    SDPA kernel, always; ``explicit`` = the formula written out (returns weights);
    ``sliding_window`` = only the last ``attention_window`` positions (Mistral; an encoder: the
    nearest on both sides); or any name a
    plugin registered with ``@register_attention``."""
    attention_window: int = 0
    """Decoders: each query attends to the last ``attention_window`` positions, itself
    included; encoders (and a seq2seq encoder): the keys less than ``attention_window``
    positions away on either side; 0 = no window. Needed (> 0) by ``attention =
    "sliding_window"``; the other backends apply it as a mask."""
    attention_options: dict[str, Any] | None = None
    """The attention backend's own settings, as a table (``[model.attention_options]``): e.g.
    ``{local_window = 64, global_tokens = [0]}`` for ``longformer``. The keys each backend
    takes are listed in docs/attention.md; None = the backend's defaults."""
    init_std: float = 0.02
    type_vocab_size: int = 0
    """Token-type (segment) embeddings added to the token embeddings (BERT: 2); 0 = none."""
    embed_norm: bool = False
    """Normalise the summed embeddings before the first block (BERT)."""
    heads: Literal["mlm+nsp", "mlm", "none", "classifier"] = "mlm+nsp"
    """Encoder only: pre-training heads on top of the encoder: masked-LM and next-sentence
    prediction, masked-LM only, or none (a bare encoder, e.g. for sentence embeddings); or
    ``classifier``: a sequence classifier (:class:`~lmforge.models.SequenceClassifier`)."""
    pooler: bool = True
    """Encoder only: BERT's pooler (dense + tanh on the first token); the NSP head reads it."""
    n_classes: int | None = None
    """``heads = "classifier"``: number of classes (at least 2)."""
    classifier_pooling: Literal["cls", "mean", "max"] | None = None
    """``heads = "classifier"``: what the classifier reads: ``cls`` = the first token (through
    the pooler when the model has one), ``mean``/``max`` over real tokens; None = ``cls``."""
    classifier_dropout: float | None = None
    """``heads = "classifier"``: dropout before the classifier's linear layer; None = ``dropout``."""
    image_size: int = 0
    """Image models (vit, image_cnn): height = width of the input in pixels (set by
    ``task = "image-classify"``); 0 for other models."""
    image_channels: int = 1
    """Image models: input channels (1 = grayscale, 3 = RGB)."""
    patch_size: int = 4
    """vit: side of the square patches (divides image_size); one token per patch."""
    signal_length: int = 0
    """1-D signal classifiers (set by ``task = "image-classify"`` on signals): samples per
    signal, the input being (B, image_channels, signal_length); image_cnn, vit and
    rnn/lstm/gru then build the 1-D models of lmforge.models.signal; 0 = not on signals."""
    bidirectional: bool = False
    """rnn/lstm/gru classifiers: read the text both ways (features = both final states)."""
    conv_widths: list[int] | None = None
    """text_cnn: the filter widths, d_model filters each; None = [3, 4, 5]. vit on signals:
    the odd widths of a Conv1d + GELU stem before the patches; None = no stem."""
    forecast: dict[str, Any] | None = None
    """Forecasters only (set by ``task = "forecast"``): {channels, horizon, patch_len, stride,
    revin}; the context is ``context_length`` (lmforge.models.forecast.ForecastShape)."""

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ConfigError:
            return ConfigError(f"model.{field}: {why}")

        if (problem := _size_problem(self)) is not None:
            raise bad(*problem)
        if self.head_dim is None and self.d_model % self.n_head and self.arch not in HEADLESS_ARCHS:
            raise bad("n_head", f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.n_kv_head is not None and (self.n_kv_head <= 0 or self.n_head % self.n_kv_head):
            raise bad("n_kv_head", f"must divide n_head ({self.n_head}), got {self.n_kv_head}")
        if self.positional == "rope" and self.dim_head % 2:
            raise bad("positional", "rope needs an even head dimension")
        if not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.type_vocab_size < 0:
            raise bad("type_vocab_size", f"must be >= 0 (0 = no token types), got {self.type_vocab_size}")
        if self.arch == "encoder" and "nsp" in self.heads and not self.pooler:
            raise bad("pooler", "the NSP head reads the pooled first token: set pooler = true, "
                      "or heads = \"mlm\" / \"none\"")
        if self.heads == "classifier" and (self.arch not in CLASSIFIER_ARCHS
                                           or (self.n_classes or 0) < 2):
            raise bad("n_classes", f"a classifier is one of {', '.join(CLASSIFIER_ARCHS)} with "
                      f"n_classes >= 2, got arch {self.arch!r}, n_classes {self.n_classes}")
        if (problem := _baseline_problem(self)) is not None:
            raise bad(*problem)
        if self.heads != "classifier" and self.n_classes is not None:
            raise bad("n_classes", "only classifiers (heads = \"classifier\") have classes")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise bad("classifier_dropout", f"must be in [0, 1), got {self.classifier_dropout}")
        if self.arch != "seq2seq" and (self.encoder_layers is not None or self.src_vocab_size):
            raise bad("encoder_layers", "encoder_layers and src_vocab_size only apply to "
                      "arch = \"seq2seq\"")
        if self.encoder_layers is not None and self.encoder_layers <= 0:
            raise bad("encoder_layers", f"must be positive, got {self.encoder_layers}")
        if self.src_vocab_size and self.src_vocab_size != self.vocab_size and self.share_embeddings:
            raise bad("share_embeddings", "a source vocabulary of its own (src_vocab_size) "
                      "needs share_embeddings = false")
        if (problem := _attention_problem(self)) is not None:
            raise bad(*problem)
        if (problem := _xl_problem(self)) is not None:
            raise bad(*problem)
        if self.rope_scaling is not None:
            problem = _rope_scaling_problem(self.rope_scaling, self.positional)
            if problem:
                raise bad("rope_scaling", problem)

    @property
    def use_attn_bias(self) -> bool:
        return self.bias if self.attn_bias is None else self.attn_bias

    @property
    def use_ff_bias(self) -> bool:
        return self.bias if self.ff_bias is None else self.ff_bias

    @property
    def causal(self) -> bool:
        """Whether a position attends only to itself and earlier positions."""
        return self.arch == "decoder"

    @property
    def n_encoder_layer(self) -> int:
        """seq2seq: blocks in the encoder."""
        return self.encoder_layers or self.n_layer

    @property
    def source_vocab(self) -> int:
        """seq2seq: size of the source vocabulary."""
        return self.src_vocab_size or self.vocab_size

    @property
    def dim_head(self) -> int:
        return self.head_dim or self.d_model // self.n_head

    @property
    def ff_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.activation in ("swiglu", "geglu", "geglu_tanh"):
            return -(-int(8 * self.d_model / 3) // 64) * 64
        return 4 * self.d_model


CLASSIFIER_ARCHS = ("encoder", "vit", "image_cnn", "rnn", "lstm", "gru", "text_cnn")
"""Architectures that take ``heads = "classifier"``."""
IMAGE_ARCHS = ("vit", "image_cnn")
RECURRENT_ARCHS = ("rnn", "lstm", "gru")
SIGNAL_ARCHS = IMAGE_ARCHS + RECURRENT_ARCHS
HEADLESS_ARCHS = RECURRENT_ARCHS + ("text_cnn", "image_cnn", "lstm_forecaster")
"""Archs without attention: n_head does not constrain their width."""
"""Architectures that classify 1-D signals (``signal_length > 0``)."""


def _baseline_problem(cfg: ModelConfig) -> tuple[str, str] | None:
    """(field, what is wrong) for the image and baseline settings, or None."""
    for name, low, top in (("image_size", 0, 2**14), ("image_channels", 1, 64),
                           ("patch_size", 1, 2**12), ("signal_length", 0, 2**20)):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= top:
            return name, f"must be an integer from {low} to {top}, got {value!r}"
    # (a [model] table names the arch; the task adds heads = "classifier" and the sizes)
    if cfg.signal_length and (problem := _signal_problem(cfg)) is not None:
        return problem
    if cfg.arch in IMAGE_ARCHS and cfg.heads == "classifier" and cfg.image_size < 1 \
            and not cfg.signal_length:
        return "image_size", f"arch {cfg.arch!r} needs the image size (task = \"image-classify\" sets it)"
    if cfg.arch == "vit" and cfg.image_size % cfg.patch_size:
        return "patch_size", f"must divide image_size ({cfg.image_size}), got {cfg.patch_size}"
    widths = cfg.conv_widths
    if widths is not None and (not isinstance(widths, list) or not widths or not all(
            isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 64 for w in widths)):
        return "conv_widths", f"must be a non-empty list of integers from 1 to 64, got {widths!r}"
    if cfg.bidirectional and cfg.arch not in RECURRENT_ARCHS:
        return "bidirectional", f"only rnn/lstm/gru read both ways, got arch {cfg.arch!r}"
    return None


def _signal_problem(cfg: ModelConfig) -> tuple[str, str] | None:
    """(field, what is wrong) for a classifier of 1-D signals (signal_length > 0), or None."""
    if cfg.arch not in SIGNAL_ARCHS or cfg.heads != "classifier" or cfg.image_size:
        return "signal_length", (f"1-D signals are read by classifiers ({', '.join(SIGNAL_ARCHS)}) "
                                 f"with image_size = 0, got arch {cfg.arch!r}")
    if cfg.arch == "vit" and cfg.signal_length % cfg.patch_size:
        return "patch_size", f"must divide signal_length ({cfg.signal_length}), got {cfg.patch_size}"
    return None


MAX_SIZES = {"context_length": 2**20, "d_model": 2**16, "n_layer": 1024, "n_head": 1024,
             "n_kv_head": 1024, "head_dim": 2**12, "d_ff": 2**20, "encoder_layers": 1024,
             "vocab_size": 2**24, "src_vocab_size": 2**24, "type_vocab_size": 2**16,
             "n_classes": 2**20, "attention_window": 2**20, "memory_length": 2**20,
             "ff_chunks": 2**16}
"""Upper bounds of the size fields, far above any real model: a ``config.json`` from a
hostile or broken file must not make lmforge allocate without bound."""
_MIN_SIZES = {"context_length": 1, "d_model": 1, "n_layer": 1, "n_head": 1, "n_kv_head": 1,
              "head_dim": 1, "d_ff": 1, "encoder_layers": 1, "vocab_size": 0,
              "src_vocab_size": 0, "type_vocab_size": 0, "n_classes": 0, "attention_window": 0,
              "memory_length": 0, "ff_chunks": 1}


def _size_problem(cfg: ModelConfig) -> tuple[str, str] | None:
    """(field, what is wrong and the allowed range) for a size or a positive float out of
    range, or None. Optional sizes (None = derived) are checked when given."""
    for name, top in MAX_SIZES.items():
        value = getattr(cfg, name)
        if value is None or (name == "attention_window" and not isinstance(value, int)):
            continue  # (attention_window's type is checked with the attention fields)
        low = _MIN_SIZES[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= top:
            zero = " (0 = derived/none)" if low == 0 else ""
            return name, f"must be an integer from {low} to {top}{zero}, got {value!r}"
    floats = ["init_std", "norm_eps"] + (["rope_theta"] if cfg.positional == "rope" else [])
    for name in floats:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not (value > 0 and math.isfinite(value)):
            return name, f"must be a finite number > 0, got {value!r}"
    return None


def _attention_problem(cfg: ModelConfig) -> tuple[str, str] | None:
    """(field, what is wrong) for the attention backend and window, or None."""
    if (unknown := unknown_backend_message(cfg.attention)) is not None:
        return "attention", unknown
    window = cfg.attention_window
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        return "attention_window", f"must be an integer >= 0 (0 = no window), got {window!r}"
    if cfg.attention == "sliding_window" and window == 0:
        return "attention_window", ('attention = "sliding_window" needs the window: set '
                                    "attention_window to a positive number of tokens")
    entry = get_backend(cfg.attention)
    if cfg.arch == "decoder" and not entry.causal:
        return "attention", (f"attention {cfg.attention!r} has no causal form, so it cannot run a "
                             "decoder (arch = \"decoder\"); use it for encoders, or choose a "
                             "backend with a causal variant")
    if cfg.attention_options is not None and not isinstance(cfg.attention_options, dict):
        return "attention_options", f"must be a table, got {cfg.attention_options!r}"
    backend_settings(cfg.attention, cfg.attention_options)  # raises naming the bad key
    if window and cfg.arch not in ("decoder", "encoder", "seq2seq"):
        return "attention_window", f"a sliding window is for decoders, encoders and seq2seq, " \
                                   f"got arch {cfg.arch!r}; set attention_window = 0"
    return None


RELATIVE_BACKENDS = ("auto", "fused", "explicit", "sliding_window")
"""Backends that read the additive ``bias`` exactly, so they run relative positions."""


def _xl_problem(cfg: ModelConfig) -> tuple[str, str] | None:
    """(field, what is wrong) for Transformer-XL and reversible-layer settings, or None."""
    if cfg.positional == "relative" and cfg.arch != "decoder":
        return "positional", ('"relative" (Transformer-XL) is for decoders (arch = "decoder"), '
                              f"got arch {cfg.arch!r}; choose learned, sinusoidal, rope or alibi")
    if cfg.positional == "t5_relative" and cfg.attention not in RELATIVE_BACKENDS:
        return "attention", (f"t5_relative positions need a backend that adds the score bias "
                             f"exactly ({', '.join(RELATIVE_BACKENDS)}), got {cfg.attention!r}")
    if cfg.positional == "t5_relative" and not (
            4 <= cfg.relative_buckets <= 4096 and 2 <= cfg.relative_max_distance <= 2**20
            and cfg.relative_max_distance > cfg.relative_buckets // 4):
        return "relative_buckets", ("t5_relative needs relative_buckets from 4 to 4096 and "
                                    "relative_max_distance above relative_buckets / 4 (at most "
                                    f"2^20), got {cfg.relative_buckets}, {cfg.relative_max_distance}")
    if cfg.positional == "relative" and cfg.attention not in RELATIVE_BACKENDS:
        return "attention", (f"relative positions need a backend that adds the score bias "
                             f"exactly ({', '.join(RELATIVE_BACKENDS)}), got {cfg.attention!r}")
    if cfg.memory_length and cfg.positional != "relative":
        return "memory_length", ("a segment memory needs relative positions: set "
                                 'positional = "relative", or memory_length = 0')
    if cfg.reversible:
        if cfg.arch == "seq2seq":
            return "reversible", 'reversible layers are for arch = "decoder" or "encoder"'
        if not cfg.prenorm or cfg.dropout > 0:
            return "reversible", ("reversible layers recompute the forward pass exactly, so "
                                  "they need prenorm = true and dropout = 0")
        if cfg.memory_length:
            return "reversible", "reversible layers do not keep an XL memory; set memory_length = 0"
    return None


def _rope_scaling_problem(scaling: dict[str, Any], positional: str) -> str | None:
    """What is wrong with a ``rope_scaling`` table, or None."""
    if positional != "rope":
        return f"only applies to positional = 'rope' (this model uses {positional!r})"
    kind = scaling.get("rope_type")
    if kind not in ROPE_SCALING:
        return f"rope_type {kind!r} is not supported; choose one of {', '.join(ROPE_SCALING)}"
    need = ROPE_SCALING[kind]
    missing = [k for k in need if k not in scaling]
    unknown = [k for k in scaling if k != "rope_type" and k not in need]
    if missing or unknown:
        return (f"rope_type {kind!r} takes exactly {', '.join(need)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else ""))
    for k in need:
        v = scaling[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            return f"{k} must be a positive number, got {v!r}"
    if kind == "llama3" and scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        return "high_freq_factor must be greater than low_freq_factor"
    return None
