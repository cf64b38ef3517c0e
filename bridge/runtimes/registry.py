"""The runner registry: which runtime runs which format, keyed by (format, runtime).

Built from the runners each `FormatSpec` declares (`DEFAULT_RUNNERS`); tests may build their own.
A format can have several runtimes (a second ONNX runtime, a wasm and a cpu backend for one
JavaScript format): verify runs each as a representation of its own. Listing runners imports
no framework; `load` imports the runner's module.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from bridge.errors import MissingExtraError, RuntimeLoadError
from bridge.formats import FORMATS, Format, RunnerSpec

if TYPE_CHECKING:
    from bridge.runtimes.base import Runner


class RunnerRegistry:
    """An ordered set of runners, at most one per (format, runtime)."""

    def __init__(self, runners: Iterable[RunnerSpec] = ()) -> None:
        self._runners: dict[tuple[Format, str], RunnerSpec] = {}
        for runner in runners:
            self.register(runner)

    def register(self, runner: RunnerSpec) -> None:
        if runner.key in self._runners:
            raise ValueError(f"runner {runner.runtime} for {runner.format.value} is registered twice")
        self._runners[runner.key] = runner

    def get(self, fmt: Format, runtime: str) -> RunnerSpec:
        """The runner `runtime` of `fmt`, or a RuntimeLoadError naming the ones there are."""
        spec = self._runners.get((fmt, runtime))
        if spec is None:
            known = ", ".join(r.runtime for r in self.for_format(fmt)) or "none"
            raise RuntimeLoadError(f"no runtime {runtime!r} is registered for {fmt.value} (registered: {known})")
        return spec

    def for_format(self, fmt: Format) -> tuple[RunnerSpec, ...]:
        """The runtimes of `fmt` in order of preference; the first is the reference one."""
        return tuple(r for r in self._runners.values() if r.format == fmt)

    def primary(self, fmt: Format) -> RunnerSpec:
        """The runtime other artifacts are compared against, or a RuntimeLoadError if `fmt` has none."""
        runners = self.for_format(fmt)
        if not runners:
            raise RuntimeLoadError(f"no runtime is registered for {fmt.value}; it can be converted but not run")
        return runners[0]

    def __iter__(self) -> Iterator[RunnerSpec]:
        return iter(self._runners.values())

    def __len__(self) -> int:
        return len(self._runners)


def load_runner_class(spec: RunnerSpec) -> type[Runner]:
    """Import the runner's class, or raise MissingExtraError naming what to install."""
    missing = spec.missing()
    if missing:
        raise MissingExtraError(
            f"the {spec.runtime} runtime for {spec.format.value} needs {', '.join(missing)}: {spec.install_hint}"
        )
    cls: type[Runner] = pkgutil.resolve_name(spec.target)
    return cls


DEFAULT_RUNNERS = RunnerRegistry(runner for spec in FORMATS.values() for runner in spec.runners)
