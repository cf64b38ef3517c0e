"""What this install can do: the stack bridge drives, the extras that are usable, the devices here.

`bridge env` prints it and `bridge --version` summarises it. Read from package metadata and
`importlib.util.find_spec` only: nothing here imports a framework.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from bridge import __version__
from bridge.formats import FORMATS
from bridge.registry import DEFAULT_REGISTRY, HopRegistry
from bridge.runtimes.registry import DEFAULT_RUNNERS, RunnerRegistry

HEADLINE = ("torch", "onnx2tf", "tensorflow", "ai-edge-litert", "onnxruntime")
"""The distributions `bridge --version` names."""


def installed(distribution: str) -> str | None:
    """The installed version of `distribution`, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def cuda_driver() -> str | None:
    """The NVIDIA driver's version line when one is loaded here (read from /proc, nothing imported)."""
    version = Path("/proc/driver/nvidia/version")
    if version.exists():
        text = version.read_text(errors="replace").splitlines()
        return text[0].strip() if text else "present"
    return "present" if Path("/dev/nvidia0").exists() else None


@dataclass(frozen=True)
class Usable:
    """One hop or runtime, and what it lacks here."""

    name: str
    extra: str
    missing: tuple[str, ...]
    optional: bool = False
    """A second runtime of its format (tf-serving-rest): its absence leaves the extra usable."""


@dataclass(frozen=True)
class Environment:
    """The whole stack, for `bridge env`."""

    bridge: str
    python: str
    platform: str
    distributions: tuple[tuple[str, str | None], ...]
    hops: tuple[Usable, ...]
    runtimes: tuple[Usable, ...]
    cuda: str | None

    zoo_missing: tuple[str, ...] = ()

    def extras(self) -> dict[str, bool]:
        """Each pip extra bridge declares, and whether everything it brings is here."""
        status: dict[str, bool] = {}
        for item in (*self.hops, *self.runtimes):
            status[item.extra] = status.get(item.extra, True) and (not item.missing or item.optional)
        status["zoo"] = not self.zoo_missing
        import importlib.util

        status["mlflow"] = importlib.util.find_spec("mlflow") is not None  # verify --mlflow
        return status


def environment(registry: HopRegistry = DEFAULT_REGISTRY, runners: RunnerRegistry = DEFAULT_RUNNERS) -> Environment:
    from bridge.conversion import tool_versions

    versions = tool_versions(registry, runners)
    for extra in ("onnxsim", "click", "rich", "jsonschema", "torchvision"):
        versions.setdefault(extra, installed(extra) or "not installed")
    return Environment(
        bridge=__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        distributions=tuple((name, None if v == "not installed" else v) for name, v in sorted(versions.items())),
        hops=tuple(Usable(h.name, h.extra, h.missing()) for h in registry),
        runtimes=tuple(Usable(f"{r.format.value}:{r.runtime}", r.extra, r.missing(), optional=i > 0) for s in FORMATS.values()
                       for i, r in enumerate(s.runners) if r in runners),
        cuda=cuda_driver(),
        zoo_missing=tuple(m for m in ("torchvision",) if importlib.util.find_spec(m) is None),
    )


def version_line() -> str:
    """``bridge 0.1.0 (torch 2.15.0, onnx2tf 2.6.9, ...; Python 3.12.1)``."""
    parts = ", ".join(f"{name} {installed(name) or 'not installed'}" for name in HEADLINE)
    return f"bridge {__version__} ({parts}; Python {sys.version.split()[0]})"
