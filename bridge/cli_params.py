"""click parameter types for bridge's structured options, so click parses and reports them.

Each type turns the text into the value the library takes (formats, ``NAME:SHAPE``,
``OUTPUT=ATOL``) and, for a bad value, lets click print its usual usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bridge.errors import InputError


class FormatList(click.ParamType[str]):
    """``tflite``, ``onnx,tf`` or (with `allow_all`) ``all``: a tuple of format names, checked."""

    name = "FORMATS"

    def __init__(self, allow_all: bool = True) -> None:
        self.allow_all = allow_all

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from bridge.formats import Format


        names = [v.strip().lower() for v in str(value).split(",") if v.strip()]
        if not names:
            self.fail("give at least one format", param, ctx)
        if self.allow_all and names == ["all"]:
            return "all"
        try:  # "all,tfjs": what all makes, and a format it leaves out
            return ",".join(n if (n == "all" and self.allow_all) else Format.parse(n).value for n in names)
        except InputError as exc:
            self.fail(str(exc), param, ctx)


class InputShape(click.ParamType[tuple[str, tuple[int, ...]]]):
    """``NAME:1,3,224,224`` -> ``(name, (1, 3, 224, 224))``."""

    name = "NAME:D0,D1,..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, tuple[int, ...]]:
        if isinstance(value, tuple):
            return value
        from bridge.inputs import parse_input_shape


        try:
            return parse_input_shape(str(value))
        except InputError as exc:
            self.fail(str(exc), param, ctx)


class OutputTolerance(click.ParamType[tuple[str, float]]):
    """``OUTPUT=ATOL`` -> ``(output, atol)``."""

    name = "OUTPUT=ATOL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, float]:
        if isinstance(value, tuple):
            return value
        name, sep, number = str(value).partition("=")
        try:
            atol = float(number)
        except ValueError:
            atol = -1.0
        if not sep or not name or not atol >= 0:
            self.fail(f"{value!r}: expected OUTPUT=ATOL with ATOL >= 0, e.g. output_0=1e-3", param, ctx)
        return name, atol


class ReportTarget(click.ParamType[Path]):
    """A file to write a report to, or ``-`` for standard output."""

    name = "PATH|-"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        return value if isinstance(value, Path) else Path(str(value))
