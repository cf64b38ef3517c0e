"""TFLite runner on ai-edge-litert's interpreter (CPU only: the GPU delegate is a mobile one)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

from bridge.errors import DeviceUnavailableError, InputError
from bridge.runtimes.base import LoadOptions, Runner
from bridge.signature import Signature, TensorSpec

if TYPE_CHECKING:
    pass

_FLATBUFFER_ID = b"TFL3"


def _spec(name: str, detail: dict[str, Any]) -> TensorSpec:
    shape_signature = detail.get("shape_signature")
    shape = detail["shape"] if shape_signature is None or len(shape_signature) == 0 else shape_signature
    dims = tuple(int(d) if int(d) >= 0 else None for d in shape)
    dtype = detail["dtype"].__name__ if hasattr(detail["dtype"], "__name__") else str(detail["dtype"])
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = dtype in ("int8", "uint8", "int16") and float(scale) > 0  # int8 inputs and outputs standing for reals
    return TensorSpec(name, dims, dtype, quantization=(float(scale), int(zero_point)) if quantized else None)


class TfliteRunner(Runner):
    runtime = "litert"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__(path, options)
        if options.device != "cpu":
            raise DeviceUnavailableError(f"{options.device}: not available (LiteRT runs here on the CPU only)")
        from ai_edge_litert.interpreter import Interpreter

        with path.open("rb") as handle:
            head = handle.read(8)
        if len(head) < 8 or head[4:8] != _FLATBUFFER_ID:
            raise InputError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier); "
                             "the file is damaged or not a .tflite: convert it again")
        try:
            self.interpreter = Interpreter(model_path=str(path))
        except Exception as exc:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError variously
            raise InputError(f"{path}: LiteRT cannot load it ({str(exc).strip().splitlines()[0][:200]})") from exc
        self._notes: tuple[str, ...] = ()
        self._open(path)

    def _open(self, path: Path) -> None:
        signatures = self.interpreter.get_signature_list()
        self._key = "serving_default" if "serving_default" in signatures else next(iter(signatures), None)
        if self._key is None:
            raise InputError(f"{path}: the TFLite model has no signature; convert it with a serving signature")
        self._runner = self.interpreter.get_signature_runner(self._key)
        inputs = self._runner.get_input_details()
        outputs = self._runner.get_output_details()
        order = signatures[self._key]
        self._signature = Signature(
            tuple(_spec(name, inputs[name]) for name in order["inputs"]),
            tuple(_spec(name, outputs[name]) for name in order["outputs"]),
        )

    def signature(self) -> Signature:
        return self._signature

    def notes(self) -> tuple[str, ...]:
        return self._notes

    def run(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        try:
            result = self._runner(**feeds)
        except RuntimeError as exc:
            if "XNNPACK" in str(exc) and not self._notes:
                # LiteRT's default delegate refuses a node it claimed (seen on resnet18's int8 model); its builtin
                # kernels run the model, and the report says which ran.
                from ai_edge_litert.interpreter import Interpreter, OpResolverType

                self.interpreter = Interpreter(model_path=str(self.path),
                                               experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
                self._open(self.path)
                reason = " ".join(str(exc).split())[:160]
                self._notes = (f"LiteRT's XNNPACK delegate refused this model ({reason}); it ran on LiteRT's builtin "
                               "kernels without the delegate",)
                return self.run(feeds)
            if any(s.dtype == "float16" for s in self._signature.inputs) and "failed to prepare" in str(exc):
                # onnx2tf's float16 model computes in float16: LiteRT's CPU kernels take float32 only.
                raise DeviceUnavailableError(
                    "cpu: not available (a float16-compute model; LiteRT's CPU kernels need float32, "
                    "run it with a GPU delegate on the device)"
                ) from exc
            raise
        return {name: result[name] for name in (o.name for o in self._signature.outputs)}
