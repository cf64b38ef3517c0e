"""bridge: convert models between PyTorch, ONNX, TensorFlow and TFLite, and verify them.

Library entry points (imported lazily, so ``import bridge`` pays for no framework)::

    conversion = bridge.convert("model.pt2", to="tflite")
    report = bridge.verify(conversion)
    assert report.passed, report.summary()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Import the bridge.verify *package* (an empty __init__, no framework) before defining the
# verify() function below, so importing bridge.verify.run later cannot rebind `bridge.verify`.
from bridge import verify as _verify_package  # noqa: F401

__version__ = "0.1.0"
__all__ = ["__version__", "convert", "verify"]

if TYPE_CHECKING:
    from bridge.conversion import Conversion
    from bridge.verify.report import Report


def convert(model: Any, to: Any, **kwargs: Any) -> Conversion:
    """Convert `model` (a path, ``package.module:factory``, an nn.Module or a Keras model).

    See `bridge.conversion.convert` for the arguments.
    """
    from bridge.conversion import convert as _convert

    return _convert(model, to, **kwargs)


def verify(target: Any, **kwargs: Any) -> Report:
    """Verify a Conversion or an output directory. See `bridge.verify.run.verify`."""
    from bridge.verify.run import verify as _verify

    return _verify(target, **kwargs)
