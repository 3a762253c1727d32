"""Weight-only int8 / int4 quantisation for fast CPU decoding (docs/quantization.md)."""

from .linear import (
                     GROUP_SIZES,
                     Int4WeightLinear,
                     Int8WeightLinear,
                     dequantize_int4,
                     dequantize_int8,
                     pack_nibbles,
                     quantize_int4,
                     quantize_int8,
                     unpack_nibbles,
)
from .model import (
                     DEFAULT_GROUP_SIZE,
                     DEFAULT_HEAD,
                     HEAD_MODES,
                     MODES,
                     check_mode,
                     plan,
                     quantize_model,
                     quantized_tensors,
                     stored_form,
)
from .storage import (
                     load_for_inference,
                     load_quantized_dir,
                     quantization_info,
                     quantize_dir,
                     write_quantized_dir,
)

__all__ = [
                     "DEFAULT_GROUP_SIZE",
                     "DEFAULT_HEAD",
                     "GROUP_SIZES",
                     "HEAD_MODES",
                     "MODES",
                     "Int4WeightLinear",
                     "Int8WeightLinear",
                     "check_mode",
                     "dequantize_int4",
                     "dequantize_int8",
                     "load_for_inference",
                     "load_quantized_dir",
                     "pack_nibbles",
                     "plan",
                     "quantization_info",
                     "quantize_dir",
                     "quantize_int4",
                     "quantize_int8",
                     "quantize_model",
                     "quantized_tensors",
                     "stored_form",
                     "unpack_nibbles",
                     "write_quantized_dir",
]
