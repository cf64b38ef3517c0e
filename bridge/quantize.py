"""Quantized artifacts: the schemes, the calibration samples, and the two tools that make them.

``--quantize`` asks for quantized artifacts beside the float ones, for the ``tflite`` and ``onnx``
targets (docs/quantization.md):

- TFLite (``dynamic``, ``int8``, ``int8-io``, ``fp16``): TensorFlow's converter from a SavedModel, the
  representative dataset being the calibration samples in the SavedModel's layout. The ``tf -> tflite``
  hop has its SavedModel; ``onnx -> tflite`` asks onnx2tf for one beside its flatbuffer. The artifact is
  compared with the hop's parent.
- ONNX (``dynamic``, ``int8`` as QDQ per channel, ``fp16``): onnxruntime's quantization tools and its
  float16 converter, on the float ONNX the hop just wrote: the artifact is that artifact's child
  (`Derivation`).

Calibration samples are the user's ``--calibration`` file (checked like ``--inputs``), or generated
with a warning that int8 accuracy is then not meaningful; convert saves them in the source's layout
(`save_calibration`) and every hop reads them in its own (`samples_for`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge import defaults
from bridge.errors import HopError, InputError, QuantizeError
from bridge.formats import Format

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from bridge.messages import Produced
    from bridge.options import ConvertOptions
    from bridge.signature import Signature

log = logging.getLogger(__name__)

GENERATED_WARNING = ("no --calibration file: the int8 ranges are calibrated on generated inputs, so int8 accuracy "
                     "is not meaningful; give representative inputs with --calibration FILE.npz")


@dataclass(frozen=True)
class Calibration:
    """The samples saved for the hops, and what the manifest says about them."""

    path: Path
    sha256: str
    samples: int
    generated: bool

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "samples": self.samples, "generated": self.generated}


def schemes_for(fmt: Format, schemes: tuple[str, ...]) -> tuple[str, ...]:
    """The requested schemes that apply to `fmt`, in the order asked."""
    return tuple(s for s in schemes if s in defaults.QUANTIZE_FORMAT_SCHEMES.get(fmt.value, ()))


def check_targets(schemes: tuple[str, ...], targets: tuple[Format, ...]) -> tuple[Format, ...]:
    """The targets the schemes apply to; an InputError when a scheme applies to none of them."""
    formats = tuple(t for t in targets if t.value in defaults.QUANTIZE_FORMAT_SCHEMES)
    if not formats:
        raise InputError(f"--quantize {','.join(schemes)}: quantized artifacts are made for tflite and onnx; "
                         "add --to tflite or --to onnx")
    for scheme in schemes:
        if not any(scheme in defaults.QUANTIZE_FORMAT_SCHEMES[t.value] for t in formats):
            where = " or ".join(f for f, s in defaults.QUANTIZE_FORMAT_SCHEMES.items() if scheme in s)
            raise InputError(f"--quantize {scheme}: made for {where} only; add --to {where.split(' or ')[0]}")
    return formats


def save_calibration(options: ConvertOptions, source: Signature, target: Path) -> Calibration:
    """Check the user's calibration file against the source (or generate samples) and save them for the hops."""
    from bridge.inputs import check_inputs, file_sha256, generate, load_npz, save_npz

    if options.calibration is not None:
        arrays = check_inputs(load_npz(options.calibration), source, options.calibration)
        count = len(next(iter(arrays.values())))
        if count < defaults.MIN_CALIBRATION_SAMPLES:
            raise InputError(f"{options.calibration}: {count} calibration samples; give at least "
                             f"{defaults.MIN_CALIBRATION_SAMPLES} representative inputs ([samples, *shape] per input)")
        save_npz(arrays, target)
        found = Calibration(target, file_sha256(options.calibration), count, False)
    else:
        log.warning(GENERATED_WARNING)
        arrays = generate(source, seed=defaults.SEED + 1, samples=defaults.CALIBRATION_SAMPLES, int_high=defaults.INT_HIGH)
        found = Calibration(target, save_npz(arrays, target), defaults.CALIBRATION_SAMPLES, True)
    import json

    target.with_suffix(".json").write_text(json.dumps(found.to_json()), encoding="utf-8")
    return found


def samples_for(signature: Signature, path: Path) -> list[dict[str, NDArray[Any]]]:
    """The calibration samples in `signature`'s names, layouts and dtypes, one dict per sample."""
    import numpy as np

    from bridge.verification.compare import from_source_layout

    with np.load(path) as data:
        stacked = {spec.name: from_source_layout(data[spec.source_name], spec.perm, leading=1).astype(spec.dtype)
                   for spec in signature.inputs}
    count = len(next(iter(stacked.values())))
    return [{name: np.ascontiguousarray(array[i]) for name, array in stacked.items()} for i in range(count)]


def record(scheme: str, options: ConvertOptions, tool: str) -> dict[str, Any]:
    """The options a quantized artifact records: scheme, tool, and the calibration it was made with."""
    recorded: dict[str, Any] = {"quantize": scheme, "tool": tool}
    if scheme in ("int8", "int8-io") and options.calibration_data is not None:
        import json

        meta = options.calibration_data.with_suffix(".json")
        recorded["calibration"] = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
        if recorded["calibration"].get("generated"):
            recorded["warning"] = GENERATED_WARNING
    return recorded


# --- TFLite, from a SavedModel -------------------------------------------------------------------------------


def tflite_from_saved_model(saved_model: Path, target: Path, through: Signature, scheme: str,
                            options: ConvertOptions) -> Produced:
    """A quantized TFLite of the SavedModel's serving_default; `through` is the SavedModel's signature."""
    import tensorflow as tf

    from bridge.hops.tf_to_tflite import SIGNATURE_KEYS
    from bridge.messages import Derivation, Produced
    from bridge.runtimes.base import read_signature
    from bridge.signature import carry_layout

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=SIGNATURE_KEYS)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if scheme == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif scheme in ("int8", "int8-io"):
        if options.calibration_data is None:
            raise InputError(f"--quantize {scheme}: no calibration samples were prepared")
        samples = samples_for(through, options.calibration_data)

        def representative() -> Any:
            yield from samples

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if scheme == "int8-io":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        target.write_bytes(converter.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError, RuntimeError, ValueError
        raise HopError(f"--quantize {scheme}: TensorFlow's converter cannot quantize this model "
                       f"({_quantize_failure(str(exc))}); quantize to dynamic or fp16, or leave it float") from exc
    from bridge.manifest import Tool

    recorded = {**record(scheme, options, "tf.lite.TFLiteConverter"), "representative_dataset": scheme in ("int8", "int8-io"),
                "inference_io": "int8" if scheme == "int8-io" else "float32"}
    signature = carry_layout(through, read_signature(Format.TFLITE, target))
    if scheme in ("int8", "int8-io"):
        left = float_ops(target)
        if left:
            target.unlink(missing_ok=True)
            raise QuantizeError(f"--quantize {scheme}: {', '.join(left[:5])} {'stays' if len(left) == 1 else 'stay'} float32 in "
                           "the int8 TFLite (TensorFlow's converter has no int8 kernel for it), so it is not an integer "
                           "model; quantize to dynamic or fp16, or leave it float")
        recorded["output_scales"] = tflite_output_scales(target, signature)
    return Produced(target, signature, defaults.quantized_precision(scheme),
                    derived=Derivation(Tool("tensorflow", tf.__version__), recorded, from_first=False))


def _quantize_failure(message: str) -> str:
    """The op the converter names, or the first line of its message."""
    found = re.search(r"(?:op|operation)s?\s*['`\"]?([A-Za-z_][\w.]*)['`\"]?\s+(?:is|are)\s+(?:not|neither)", message) \
        or re.search(r"['`\"]([A-Za-z_][\w.]*)['`\"]\s+op\s+is\s+(?:not|neither)", message)
    if found:
        return f"op {found.group(1).removeprefix('tf.')} has no int8 kernel in TFLite"
    lines = [line.strip() for line in message.splitlines() if line.strip() and "error:" in line.lower()]
    return (lines[0] if lines else message.strip().splitlines()[0] if message.strip() else "no message")[:300]


# --- ONNX, from the float ONNX ---------------------------------------------------------------------------------


def onnx_quantized(float_onnx: Path, signature: Signature, scheme: str, options: ConvertOptions) -> Produced:
    """A quantized copy of `float_onnx` beside it (``model_int8.onnx``), derived from it."""
    import onnxruntime

    from bridge.manifest import Tool
    from bridge.messages import Derivation, Produced

    target = float_onnx.with_name(f"model_{defaults.quantized_precision(scheme)}.onnx")
    if scheme == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel

        model = convert_float_to_float16(onnx.load(str(float_onnx)), keep_io_types=True)
        wrapped = OnnxModel(model)
        wrapped.topological_sort()  # the converter appends its input casts after the nodes that read them
        onnx.save(wrapped.model, str(target))
        how: dict[str, Any] = {"keep_io_types": True}
        tool = "onnxruntime.transformers.float16"
    else:
        clean = _without_value_info(float_onnx)
        try:
            how, tool = _quantize_onnx(clean, target, signature, scheme, options)
        finally:
            clean.unlink(missing_ok=True)
    from bridge.runtimes.base import read_signature
    from bridge.signature import carry_layout

    recorded = {**record(scheme, options, tool), **how}
    produced = carry_layout(signature, read_signature(Format.ONNX, target))
    if scheme == "int8":
        recorded["output_scales"] = onnx_output_scales(target, produced)
    return Produced(target, produced, defaults.quantized_precision(scheme),
                    derived=Derivation(Tool("onnxruntime", onnxruntime.__version__), recorded))


def _quantize_onnx(clean: Path, target: Path, signature: Signature, scheme: str,
                   options: ConvertOptions) -> tuple[dict[str, Any], str]:
    """onnxruntime's dynamic or static (QDQ, per channel) quantization; the options used and the function's name."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if scheme == "dynamic":
        quantize_dynamic(str(clean), str(target), weight_type=QuantType.QInt8)
        return {"weight_type": "QInt8"}, "onnxruntime.quantization.quantize_dynamic"
    if options.calibration_data is None:
        raise InputError(f"--quantize {scheme}: no calibration samples were prepared")
    reader = _Reader(samples_for(signature, options.calibration_data))
    try:
        quantize_static(str(clean), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types for ops it cannot quantize
        target.unlink(missing_ok=True)
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise HopError(f"--quantize int8: onnxruntime cannot quantize this model ({reason}); "
                       "quantize to dynamic or fp16, or leave it float") from exc
    how = {"quant_format": "QDQ", "per_channel": True, "activation_type": "QInt8", "weight_type": "QInt8"}
    tool = "onnxruntime.quantization.quantize_static"
    return how, tool


def _without_value_info(float_onnx: Path) -> Path:
    """A copy of the model without its intermediate shapes (``value_info``), beside it: onnxruntime's quantizer infers
    them again, and a stale one (an exporter's) stops it ("inferred shape and existing shape differ")."""
    import onnx

    model = onnx.load(str(float_onnx), load_external_data=False)
    del model.graph.value_info[:]
    copy = float_onnx.with_name(".quantize-input.onnx")
    onnx.save(model, str(copy))
    return copy


def onnx_output_scales(path: Path, signature: Signature) -> dict[str, float]:
    """Source output name -> the scale of the int8 tensor each output is dequantised from (a DequantizeLinear
    producing it), where there is one: verify gives the max abs error in units of it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    constants = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    scales: dict[str, float] = {}
    for spec in signature.outputs:
        node = producers.get(spec.name)
        if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in constants:
            continue
        scale = numpy_helper.to_array(constants[node.input[1]])
        if scale.size == 1:
            scales[spec.source_name] = float(scale.reshape(()))
    return scales


def float_ops(path: Path) -> list[str]:
    """The operations of a TFLite that compute in float32 (besides the QUANTIZE and DEQUANTIZE at its edges), each
    named once: what the converter could not make int8."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    kinds = {d["index"]: np.dtype(d["dtype"]).kind for d in interpreter.get_tensor_details()}
    found: list[str] = []
    for op in interpreter._get_ops_details():  # noqa: SLF001 - no public graph API
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") or op["op_name"] in found:
            continue
        if any(kinds.get(int(t)) == "f" for t in (*op["inputs"], *op["outputs"]) if int(t) >= 0):
            found.append(str(op["op_name"]))
    return found


def tflite_output_scales(path: Path, signature: Signature) -> dict[str, float]:
    """The same for a TFLite: an int8 output's own scale, or that of the tensor a DEQUANTIZE turns into the output."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    producers = {out: op for op in interpreter._get_ops_details() for out in op["outputs"]}  # noqa: SLF001 - no public graph API
    listed = interpreter.get_signature_list()
    key = "serving_default" if "serving_default" in listed else next(iter(listed), None)
    indices = interpreter._get_full_signature_list()[key]["outputs"] if key is not None else {}  # noqa: SLF001
    scales: dict[str, float] = {}
    for spec in signature.outputs:
        index = indices.get(spec.name)
        if index is None:
            continue
        detail = details[index]
        op = producers.get(index)
        if np.dtype(detail["dtype"]).kind == "f" and op is not None and op["op_name"] == "DEQUANTIZE":
            detail = details[op["inputs"][0]]
        scale = (detail.get("quantization_parameters") or {}).get("scales")
        if scale is not None and len(scale) == 1 and float(scale[0]) > 0:
            scales[spec.source_name] = float(scale[0])
    return scales


class _Reader:
    """onnxruntime's CalibrationDataReader over the samples."""

    def __init__(self, samples: list[dict[str, Any]]) -> None:
        self._all = samples
        self._samples = iter(samples)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._samples, None)

    def rewind(self) -> None:  # onnxruntime calls it between calibration passes
        self._samples = iter(self._all)
