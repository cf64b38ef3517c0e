"""bridge in your own tests: assert that a converted model still computes what the source computes.

::

    from bridge.testing import assert_equivalent

    def test_tflite_export_is_faithful():
        assert_equivalent("mypkg.models:build", to="tflite", input_shapes={"x": (1, 3, 224, 224)}, atol=1e-4)

On failure the AssertionError's message is verify's drift table. The pytest plugin
(`bridge.pytest_plugin`, registered through the ``pytest11`` entry point) adds a session fixture,
``bridge_convert``, that converts each (model, targets, options) once and caches the result by
content, so a repository of models can gate on equivalence the way it gates on accuracy.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.conversion import Conversion, convert
from bridge.formats import Format
from bridge.options import ConvertOptions, VerifyOptions
from bridge.verification.report import TABLE_HEADERS, Report, table_rows
from bridge.verification.run import verify

__all__ = ["assert_equivalent", "drift_table"]


def drift_table(report: Report) -> str:
    """Verify's table (one row per representation and device) and its problems, as plain text."""
    rows = [list(TABLE_HEADERS), *table_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADERS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([*lines, "", report.summary()])


def assert_equivalent(
    model: Any,
    to: str | Format | Sequence[str | Format] = "all",
    *,
    atol: float | None = None,
    rtol: float | None = None,
    tol: Mapping[str, float] | None = None,
    devices: Sequence[str] = ("cpu",),
    samples: int | None = None,
    inputs: str | Path | None = None,
    example_inputs: Any = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    convert_options: ConvertOptions | None = None,
    verify_options: VerifyOptions | None = None,
    out_dir: str | Path | None = None,
) -> Report:
    """Convert `model` (or take a `Conversion`), verify it, and fail with the drift table unless it passes.

    The tolerances apply to convert's checks and to verify. Without `out_dir` the artifacts go to a
    temporary directory that is removed afterwards (the returned Report keeps every figure).
    """
    options = ConvertOptions.build(convert_options, atol=atol, rtol=rtol, tol=tol)
    temporary = None
    try:
        if isinstance(model, Conversion):
            conversion = model
        else:
            if out_dir is None:
                temporary = Path(tempfile.mkdtemp(prefix="bridge-test-"))
                out_dir = temporary / "model.bridge"
            conversion = convert(model, to, options, out_dir=out_dir, force=True, example_inputs=example_inputs,
                                 input_shapes=input_shapes, strict=False)
        report = verify(conversion, verify_options, devices=devices, samples=samples, inputs=inputs, atol=atol,
                        rtol=rtol, tol=tol, save_inputs=(temporary / "inputs.npz") if temporary else None)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    problems = [f"{f.hop}: {f.error}" for f in conversion.failures if f.resolved_by is None]
    if problems or not report:
        raise AssertionError("bridge: the converted model is not equivalent to the source\n"
                             + "".join(f"convert: {p}\n" for p in problems) + drift_table(report))
    return report
