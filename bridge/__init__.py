"""bridge: convert models between PyTorch, ONNX, TensorFlow and TFLite, and verify them.

::

    import bridge

    conversion = bridge.convert("model.pt2", to="tflite")
    report = bridge.verify(conversion)
    assert report.passed, report.summary()

The names below are imported on first use (PEP 562), so ``import bridge`` pays for no framework
and no numpy; `bridge.convert` and `bridge.verify` are the real, typed functions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "convert": "bridge.conversion",
    "Conversion": "bridge.conversion",
    "ProgressEvent": "bridge.progress",
    "verify": "bridge.verification.run",
    "explain": "bridge.localization.explain",
    "Localization": "bridge.localization.result",
    "LocalizeOptions": "bridge.options",
    "Report": "bridge.verification.report",
    "ReportPaths": "bridge.verification.report",
    "ConvertOptions": "bridge.options",
    "VerifyOptions": "bridge.options",
    "Manifest": "bridge.manifest",
    "Artifact": "bridge.manifest",
    "Source": "bridge.manifest",
    "Format": "bridge.formats",
    "Signature": "bridge.signature",
    "TensorSpec": "bridge.signature",
    "BridgeError": "bridge.errors",
    "UserError": "bridge.errors",
    "InputError": "bridge.errors",
    "HopError": "bridge.errors",
}

__all__ = [
    "__version__", "convert", "Conversion", "ProgressEvent", "verify", "Report", "ReportPaths", "ConvertOptions",
    "VerifyOptions", "Manifest", "Artifact", "Source", "Format", "Signature", "TensorSpec", "BridgeError", "UserError",
    "InputError", "HopError", "explain", "Localization", "LocalizeOptions",
]

if TYPE_CHECKING:
    from bridge.conversion import Conversion, convert
    from bridge.errors import BridgeError, HopError, InputError, UserError
    from bridge.formats import Format
    from bridge.localization.explain import explain
    from bridge.localization.result import Localization
    from bridge.manifest import Artifact, Manifest, Source
    from bridge.options import ConvertOptions, LocalizeOptions, VerifyOptions
    from bridge.progress import ProgressEvent
    from bridge.signature import Signature, TensorSpec
    from bridge.verification.report import Report, ReportPaths
    from bridge.verification.run import verify


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
