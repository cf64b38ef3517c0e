"""ONNX Runtime runner: the CPU provider, and the CUDA provider where it is present."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

from bridge import safety
from bridge.errors import DeviceUnavailableError, InputError
from bridge.runtimes.base import LoadOptions, Runner
from bridge.signature import Signature, TensorSpec

if TYPE_CHECKING:
    pass

def ort_dtype(type_name: str) -> str:
    """onnxruntime's ``tensor(float)`` as a numpy dtype name (``float32``), through onnx's own type table.

    Every ONNX element type onnx knows is covered (uint16/32/64, float8, string among them);
    bfloat16, which numpy lacks, keeps its name.
    """
    import onnx

    element = type_name.removeprefix("tensor(").removesuffix(")")
    try:
        code = onnx.TensorProto.DataType.Value(element.upper())
    except ValueError:
        return type_name
    if code == onnx.TensorProto.BFLOAT16:
        return "bfloat16"
    return str(onnx.helper.tensor_dtype_to_np_dtype(code).name)


_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def load_onnx_checked(path: Path) -> Any:
    """Load an ONNX model's proto (no external data), refuse unsafe external data, run onnx's checker."""
    import onnx

    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty; export the model again")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for damaged files
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__}); "
                         "the file is damaged or truncated: export it again") from exc
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{path}: parses as ONNX but holds no graph; the file is damaged or not ONNX")
    external = safety.check_onnx_external_data(model, path)
    newest = onnx.defs.onnx_opset_version()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset > newest:
        # The checker accepts any opset number; onnxruntime then fails with a page of C++ context.
        raise InputError(f"{path}: ONNX opset {opset} is newer than the installed onnx knows ({newest}); "
                         f"export the model at opset {newest} or lower")
    try:
        # full_check runs shape inference. The path form checks a model's external data too, and reads and parses
        # the file again (0.5 s for resnet18's 45 MB, against 0.1 s for the proto already read): it is kept for those.
        onnx.checker.check_model(str(path) if external else model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - ValidationError, InferenceError and C++ errors alike
        # The checker's messages span lines ("... of node: \nname: OpType: Add\n is not ..."): keep the sentence.
        reason = " ".join(str(exc).split("==> Context:")[0].split()).rstrip(".")[:300] or type(exc).__name__
        raise InputError(f"{path}: not a valid ONNX model: {reason}; fix the graph or export it again") from exc
    return model


def external_data_files(model: Any) -> tuple[str, ...]:
    """The external data files an ONNX model's tensors name, relative to its directory (checked inside it)."""
    return tuple(sorted({e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}))


def _ort_reason(exc: Exception) -> str:
    """onnxruntime's reason without its ``[ONNXRuntimeError] : 1 : FAIL : Load model from PATH failed:`` prefix."""
    text = " ".join(str(exc).split())
    return (text.split(" failed:", 1)[1] if " failed:" in text else text).strip()[:300] or type(exc).__name__


def onnx_signature(model: Any) -> Signature:
    """Names, shapes and dtypes of an ONNX model's graph inputs and outputs (initializers excluded)."""
    import onnx

    initializers = {t.name for t in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor_type = value.type.tensor_type
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim
        )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        return TensorSpec(value.name, shape, dtype)

    return Signature(
        tuple(spec(v) for v in model.graph.input if v.name not in initializers),
        tuple(spec(v) for v in model.graph.output),
    )


def dims(shape: Any) -> tuple[int | str | None, ...]:
    return tuple(d if isinstance(d, int) else (str(d) if d else None) for d in shape)


class OnnxruntimeRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__(path, options)
        import onnxruntime as ort

        self._companions = external_data_files(load_onnx_checked(path))
        provider = _PROVIDERS.get(options.device.split(":")[0])
        if provider is None or provider not in ort.get_available_providers():
            providers = ", ".join(ort.get_available_providers())
            raise DeviceUnavailableError(f"{options.device}: not available (onnxruntime providers: {providers})")
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), session_options, providers=[provider])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
            raise InputError(f"{path}: onnxruntime cannot load it ({_ort_reason(exc)}); "
                             "convert it with ops and an opset this onnxruntime supports") from exc
        used = self.session.get_providers()[0]
        if used != provider:
            # ORT falls back to CPU silently when the CUDA provider cannot start; timings would lie.
            raise DeviceUnavailableError(f"{options.device}: not available ({provider} fell back to {used})")
        self._provider = str(used)
        self._output_names = [o.name for o in self.session.get_outputs()]

    @property
    def provider(self) -> str:
        return self._provider

    def companions(self) -> tuple[str, ...]:
        return self._companions

    def signature(self) -> Signature:
        def spec(arg: Any) -> TensorSpec:
            return TensorSpec(arg.name, dims(arg.shape), ort_dtype(arg.type))

        return Signature(
            tuple(spec(a) for a in self.session.get_inputs()),
            tuple(spec(a) for a in self.session.get_outputs()),
        )

    def run(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        return dict(zip(self._output_names, self.session.run(self._output_names, feeds), strict=False))


def embedding_sizes(path: Path) -> dict[str, int]:
    """For integer graph inputs that index a Gather's constant table: the table's row count."""
    model = load_onnx_checked(path)
    tables = {t.name: t.dims[0] for t in model.graph.initializer if t.dims}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.dims:
            tables[node.output[0]] = node.attribute[0].t.dims[0]
    inputs = {i.name for i in model.graph.input}
    sizes: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in inputs and node.input[0] in tables:
            previous = sizes.get(node.input[1])
            size = int(tables[node.input[0]])
            sizes[node.input[1]] = size if previous is None else min(previous, size)
    return sizes
