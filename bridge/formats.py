"""The formats bridge converts between, and how a path is recognised as one."""

from __future__ import annotations

import enum
import re
from pathlib import Path

from bridge.errors import InputError


class Format(str, enum.Enum):
    """A model representation. The value is the name used by ``--to`` and ``--from``."""

    TORCH = "torch"
    ONNX = "onnx"
    TF = "tf"
    KERAS = "keras"
    TFLITE = "tflite"

    def __str__(self) -> str:
        return self.value

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]

    @classmethod
    def parse(cls, name: str) -> Format:
        """The format called `name`, or an InputError listing the valid names."""
        try:
            return cls(name.strip().lower())
        except ValueError:
            valid = ", ".join(f.value for f in cls)
            raise InputError(f"unknown format {name!r}: use one of {valid}") from None


_DESCRIPTIONS = {
    Format.TORCH: "PyTorch: nn.Module (package.module:factory), TorchScript .pt, ExportedProgram .pt2",
    Format.ONNX: "ONNX model .onnx (external data kept inside its directory)",
    Format.TF: "TensorFlow SavedModel directory with a serving_default signature",
    Format.KERAS: "Keras 3 model .keras",
    Format.TFLITE: "TFLite flatbuffer .tflite (float32; --fp16 also writes float16)",
}

# A Python reference to a factory: ``package.module:callable``.
_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

_SUFFIXES = {
    ".pt2": Format.TORCH,
    ".pt": Format.TORCH,
    ".pth": Format.TORCH,
    ".onnx": Format.ONNX,
    ".tflite": Format.TFLITE,
    ".keras": Format.KERAS,
    ".h5": Format.KERAS,
}

# The file extension each format's artifact is written with.
ARTIFACT_NAMES = {
    Format.TORCH: "model.pt2",
    Format.ONNX: "model.onnx",
    Format.TF: "saved_model",
    Format.KERAS: "model.keras",
    Format.TFLITE: "model.tflite",
}


def is_reference(model: str) -> bool:
    """True when `model` reads as ``package.module:factory`` rather than a path."""
    return bool(_REFERENCE.match(model)) and not Path(model).exists()


def detect(path: Path) -> Format:
    """The format of the model at `path`, from its name and, for directories, its contents."""
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return Format.TF
        raise InputError(
            f"{path}: a directory but not a SavedModel (no saved_model.pb inside); "
            "point at a SavedModel directory or a model file"
        )
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(_SUFFIXES))
        raise InputError(
            f"{path}: cannot tell the format from the suffix {path.suffix or '(none)'!r}; "
            f"rename it to one of {known} or pass --from"
        )
    return fmt


def torch_kind(path: Path) -> str:
    """How a PyTorch file is stored: ``exported_program`` (.pt2) or ``torchscript`` (.pt/.pth)."""
    return "exported_program" if path.suffix.lower() == ".pt2" else "torchscript"
