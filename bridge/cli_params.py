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


class Size(click.ParamType[int]):
    """``20GB``, ``512MB``, ``1.5GiB`` or bytes -> bytes."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from bridge.memory import parse_size

        try:
            return parse_size(value if isinstance(value, int) else str(value),
                              param.opts[0] if param is not None and param.opts else "size")
        except InputError as exc:
            self.fail(str(exc), param, ctx)


AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Age(click.ParamType[float]):
    """``30d``, ``12h``, ``90m``, ``2w`` or seconds -> seconds."""

    name = "AGE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        import re

        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(value).lower())
        if not match:
            self.fail(f"{value!r}: give an age such as 30d, 12h, 90m, 2w or a number of seconds", param, ctx)
        return float(match.group(1)) * AGE_UNITS[match.group(2) or "s"]


class ReportTarget(click.ParamType[Path]):
    """A file to write a report to, or ``-`` for standard output."""

    name = "PATH|-"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        return value if isinstance(value, Path) else Path(str(value))
