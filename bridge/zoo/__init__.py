"""Reference models for bridge, declared as data.

Each `ZooModel` names its builder by a ``package.module:function`` string, its example inputs,
its tolerances and its known failures (with their reasons). Importing this package loads no
framework; building or exporting a model does, and `export` does it in a child process::

    import zoo
    zoo.get("cnn").inputs                  # (InputSpec(name='x', shape=(1, 1, 28, 28), ...),)
    bridge.zoo.export("cnn", Path("out"))         # out/cnn.pt2 and out/cnn.inputs.npz
"""

from __future__ import annotations

from bridge.zoo.export import ExportResult, export
from bridge.zoo.registry import MODELS, InputSpec, KnownFailure, ZooModel, get, names

__all__ = ["MODELS", "ExportResult", "InputSpec", "KnownFailure", "ZooModel", "export", "get", "names"]
