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


def backend_for(target: Format | str) -> type[Any]:
    """An ``onnx.backend.base.Backend`` class whose models are converted to `target` and run there."""
    from onnx.backend.base import Backend

    fmt = target if isinstance(target, Format) else Format.parse(target)

    class BridgeBackend(Backend):  # type: ignore[misc]
        """ONNX -> `fmt` with bridge, run in `fmt`'s runtime."""

        target = fmt

        @classmethod
        def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> BridgeRep:
            import onnx

            from bridge.conversion import convert

            work = Path(tempfile.mkdtemp(prefix=f"bridge-backend-{fmt.value}-"))
            try:
                onnx.save(model, str(work / "model.onnx"))
                conversion = convert(work / "model.onnx", to=fmt, out_dir=work / "model.bridge")
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
            return BridgeRep(conversion, fmt, work)

        @classmethod
        def run_model(cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple[Any, ...]:
            return cls.prepare(model, device, **kwargs).run(inputs)

        @classmethod
        def supports_device(cls, device: str) -> bool:
            return device == "CPU"

    BridgeBackend.__name__ = BridgeBackend.__qualname__ = f"Bridge{fmt.value.capitalize()}Backend"
    return BridgeBackend


__all__ = ["BackendError", "BridgeRep", "backend_for"]
