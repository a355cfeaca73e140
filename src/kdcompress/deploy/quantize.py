"""The quantization step: a `QuantizationSpec` applied to an fp32 graph with onnxruntime.quantization
(Optimum's `onnxruntime/quantization.py` idea). `int8_scheme.py` chooses the spec, `int8_search.py`
which operators it keeps in fp32 for `--accuracy-goal`."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from kdcompress.deploy.int8_scheme import Int8Scheme, QuantizationSpec
from kdcompress.errors import KDCompressError
from kdcompress.quiet import quiet_logging

Feed = Mapping[str, np.ndarray]


def quantize_int8(src: Path, dst: Path, spec: QuantizationSpec, calibration_feeds: Sequence[Feed] = ()) -> None:
    """Write the int8 form of `src` to `dst`, dynamic or static as `spec.mode` says."""
    if spec.mode == "dynamic":
        quantize_dynamic_int8(src, dst, spec)
    else:
        quantize_static_int8(src, dst, spec, calibration_feeds)


def _extra_options(scheme: Int8Scheme) -> dict:
    import onnx

    return {
        # Only weights (constant B) are quantized: the two activation x activation MatMuls of
        # attention lose too much precision in 8 bits, and dynamic mode cannot do them anyway.
        "MatMulConstBOnly": True,
        # Graphs fused by --optimize contain com.microsoft ops (Attention, SkipLayerNormalization)
        # that ONNX shape inference cannot type; without a default the quantizer stops with
        # "Unable to find data type".
        "DefaultTensorType": onnx.TensorProto.FLOAT,
        "WeightSymmetric": True,
        # u8 activations keep asymmetric ranges (post-GELU values are mostly positive);
        # s8 activations (the ARM static choice) are symmetric.
        "ActivationSymmetric": scheme.activation_type == "QInt8",
    }


def quantize_dynamic_int8(src: Path, dst: Path, spec: QuantizationSpec) -> None:
    """Dynamic int8: weights quantized offline, activations per run (no calibration data)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_logging():
        quantize_dynamic(
            str(src), str(dst),
            op_types_to_quantize=spec.op_types,
            per_channel=spec.scheme.per_channel,
            reduce_range=spec.scheme.reduce_range,
            weight_type=QuantType[spec.scheme.weight_type],
            nodes_to_exclude=list(spec.nodes_to_exclude),
            extra_options=_extra_options(spec.scheme),
        )


class FeedReader:
    """onnxruntime's CalibrationDataReader over a list of ready-made feeds (with the `__len__` / `set_range`
    that its strided calibration uses)."""

    def __init__(self, feeds: Sequence[Feed]):
        self._feeds = list(feeds)
        self._iter = iter(self._feeds)

    def get_next(self):
        return next(self._iter, None)

    def __iter__(self):
        return iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self._feeds[start_index:end_index])


def calibration_stride(batches: int, most: int = 8) -> int:
    """Batches per calibration pass: the largest divisor of `batches` up to `most` (ORT requires a divisor)."""
    return max(d for d in range(1, min(most, batches) + 1) if batches % d == 0)


def quantize_static_int8(src: Path, dst: Path, spec: QuantizationSpec, calibration_feeds: Sequence[Feed]) -> None:
    """Static int8 (QDQ): activation ranges calibrated (min-max) on `calibration_feeds`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration_feeds:
        raise KDCompressError("static quantization needs calibration examples; pass --calibration-data")
    scheme = spec.scheme
    options = _extra_options(scheme)
    # Keep memory flat on base-size models: calibrate a few batches at a time and merge their ranges,
    # instead of holding every intermediate tensor of every batch. Not CalibMaxIntermediateOutputs:
    # onnxruntime 1.32 drops the collected tensors when that count is reached without computing their
    # ranges, so every full group of batches was silently lost (and exactly 16 batches - 128 examples,
    # the default - failed with "No data is collected").
    options["CalibStridedMinMax"] = calibration_stride(len(calibration_feeds))
    with quiet_logging():
        quantize_static(
            str(src), str(dst), FeedReader(calibration_feeds),
            quant_format=QuantFormat[scheme.quant_format],
            op_types_to_quantize=spec.op_types,
            per_channel=scheme.per_channel,
            reduce_range=scheme.reduce_range,
            activation_type=QuantType[scheme.activation_type],
            weight_type=QuantType[scheme.weight_type],
            nodes_to_exclude=list(spec.nodes_to_exclude),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=options,
        )
