"""int8 dynamic quantisation of an exported encoder (per-channel: the per-tensor default costs quality)."""

from __future__ import annotations

import tempfile
from pathlib import Path

# Only the weight matmuls are quantised: that is where the time goes. The word-embedding Gather stays
# fp32 (quantising it saves size, not time, and moves every token's input), and so do the prefixes:
# they reach attention through Slice/Reshape, never as a MatMul's constant B.
QUANTIZED_OPS = ("MatMul",)


def quantize_int8(source: Path, target: Path) -> None:
    """Write an int8 copy of `source`: int8 per-channel weights, uint8 activations quantised per batch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        # The dynamo exporter writes each Linear as MatMul(x, Transpose(W)); this pre-processing pass
        # (onnxruntime's basic graph optimisation) folds the Transpose so that W is a constant
        # quantize_dynamic can quantise. Without it nothing at all is quantised.
        folded = Path(scratch) / "folded.onnx"
        quant_pre_process(str(source), str(folded), skip_symbolic_shape=True)
        quantize_dynamic(
            model_input=str(folded),
            model_output=str(target),
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
            extra_options={"MatMulConstBOnly": True},
        )
