"""bridge as an ONNX backend, one per target format: ONNX's own backend tests run through bridge's conversions.

``backend_for(Format.TFLITE)`` is an ``onnx.backend.base.Backend``: `prepare` converts the model with
`bridge.convert` (checked hops, candidates, an old opset lifted: everything a user gets) into a
temporary folder, strictly, so a hop that fails or an artifact that does not agree with the ONNX
model is the test's error; `run` feeds the inputs to the target artifact in its reference runtime,
in a child process like every verify run, and returns the outputs in the ONNX model's names,
order and layout. ONNX's standard runner (``onnx.backend.test.BackendTest``) then compares them with
the expected outputs it ships. tests/test_onnx_backend.py runs a subset; docs/formats.md says how.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bridge.formats import Format


class BackendError(RuntimeError):
    """The target artifact could not run; ONNX's runner reports it as the test's error."""


class BridgeRep:
    """A converted model ready to run: the target artifact of one `bridge.convert`."""

    def __init__(self, conversion: Any, target: Format, work: Path) -> None:
        from bridge.verification.run import subjects_of

        self.conversion = conversion
        self.target = target
        self.work = work
        subjects, _ = subjects_of(conversion.manifest, Path(conversion.out_dir))
        self.subject = next(s for s in subjects if s.format == target and s.precision == "float32")
        self.source = conversion.manifest.source.signature
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(work), True)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """`inputs` in the ONNX model's input order (a list) or by name (a dict); the outputs in its output order."""
        from bridge import inputs as inputs_mod
        from bridge.runtimes.registry import DEFAULT_RUNNERS
        from bridge.verification.run import Slot, feeds_for, run_representation

        names = [spec.name for spec in self.source.inputs]
        given = dict(inputs) if isinstance(inputs, dict) else dict(zip(names, inputs, strict=True))
        source_inputs = {name: np.asarray(given[name])[None] for name in names}  # one sample
        with tempfile.TemporaryDirectory(prefix="bridge-backend-run-", dir=self.work) as tmp:
            feeds = Path(tmp, "feeds.npz")
            inputs_mod.write_npz(feeds, feeds_for(self.subject, source_inputs))
            slot = Slot(self.subject, DEFAULT_RUNNERS.primary(self.target), "cpu", primary=True)
            rep, result = run_representation(slot, feeds, Path(tmp), 1, runs=1, warmup=0)
        if result is None:
            raise BackendError(f"{self.target.value} artifact did not run: {rep.error}")
        return tuple(result[spec.name][0] for spec in self.source.outputs)


def _backend(name: str, prepare: Callable[[Any, Path], Any], prefix: str) -> type[Any]:
    """An ``onnx.backend.base.Backend`` class on the CPU whose `prepare(model, work)` makes a rep in a fresh folder."""
    from onnx.backend.base import Backend

    class CpuBackend(Backend):  # type: ignore[misc]
        @classmethod
        def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> Any:
            work = Path(tempfile.mkdtemp(prefix=prefix))
            try:
                return prepare(model, work)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise

        @classmethod
        def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[Any, ...]:
            return tuple(cls.prepare(model, device, **kwargs).run(inputs))

        @classmethod
        def supports_device(cls, device: str) -> bool:
            return device == "CPU"

    CpuBackend.__name__ = CpuBackend.__qualname__ = name
    return CpuBackend


def backend_for(target: Format | str) -> type[Any]:
    """An ``onnx.backend.base.Backend`` class whose models are converted to `target` by bridge and run there."""
    fmt = target if isinstance(target, Format) else Format.parse(target)

    def prepare(model: Any, work: Path) -> BridgeRep:
        import onnx

        from bridge.conversion import convert

        onnx.save(model, str(work / "model.onnx"))
        return BridgeRep(convert(work / "model.onnx", to=fmt, out_dir=work / "model.bridge"), fmt, work)

    return _backend(f"Bridge{fmt.value.capitalize()}Backend", prepare, f"bridge-backend-{fmt.value}-")


class BareRep:
    """A model converted by one converter alone, the way its README shows, run in-process (bridge.coverage's baseline)."""

    def __init__(self, model: Any, tool: str, work: Path) -> None:
        self.tool = tool
        self.names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
        self.shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(work), True)
        if tool == "onnx2torch":
            import onnx2torch

            self.module = onnx2torch.convert(model).eval()
            return
        import onnx
        import onnx2tf
        from ai_edge_litert.interpreter import Interpreter

        onnx.save(model, str(work / "model.onnx"))
        onnx2tf.convert(input_onnx_file_path=str(work / "model.onnx"), output_folder_path=str(work / "out"), non_verbose=True)
        self.interpreter = Interpreter(model_path=str(work / "out" / "model_float32.tflite"))

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        given = [inputs[n] for n in self.names] if isinstance(inputs, dict) else list(inputs)
        if self.tool == "onnx2torch":
            import torch

            with torch.no_grad():
                out = self.module(*[torch.from_numpy(np.array(x)) for x in given])
            outs = out if isinstance(out, (tuple, list)) else (out,)
            return tuple(o.numpy() if hasattr(o, "numpy") else np.asarray(o) for o in outs)
        interp = self.interpreter
        details = interp.get_input_details()
        fed = [_to_layout(np.asarray(x), tuple(d["shape"])) for x, d in zip(given, details, strict=True)]
        for x, d in zip(fed, details, strict=True):
            if tuple(d["shape"]) != x.shape:
                interp.resize_tensor_input(d["index"], list(x.shape))
        interp.allocate_tensors()
        for x, d in zip(fed, interp.get_input_details(), strict=True):
            interp.set_tensor(d["index"], x.astype(d["dtype"]))
        interp.invoke()
        outs = [interp.get_tensor(d["index"]) for d in interp.get_output_details()]
        return tuple(_to_layout(o, tuple(shape)) if all(shape) else o for o, shape in zip(outs, self.shapes, strict=False))


def _to_layout(x: np.ndarray[Any, Any], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """`x` as `shape` wants it: as it is, or with the channel axis moved (NCHW <-> NHWC), as a user of onnx2tf would."""
    if x.shape == shape or x.ndim < 3 or len(shape) != x.ndim:
        return x
    last = (0, *range(2, x.ndim), 1)
    first = (0, x.ndim - 1, *range(1, x.ndim - 1))
    for perm in (last, first):
        if tuple(x.shape[p] for p in perm) == shape:
            return np.transpose(x, perm)
    return x


def bare_backend_for(tool: str) -> type[Any]:
    """An ONNX backend that converts with `tool` alone (``onnx2tf`` to TFLite, ``onnx2torch``): no bridge on the way."""
    if tool not in BARE_TOOLS:
        raise ValueError(f"unknown converter {tool!r}: use {', '.join(BARE_TOOLS)}")
    return _backend(f"Bare{tool.capitalize()}Backend", lambda model, work: BareRep(model, tool, work), f"bridge-bare-{tool}-")


BARE_TOOLS = {"onnx2tf": "tflite", "onnx2torch": "torch"}
"""The converters measured alone, and the target each makes."""

__all__ = ["BARE_TOOLS", "BackendError", "BareRep", "BridgeRep", "backend_for", "bare_backend_for"]
