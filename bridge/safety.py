"""Checks made before a downloaded file is handed to a framework (docs/safety.md).

Nothing here imports a framework: archives and configs are read with the standard library, and
the ONNX check takes a model proto its caller loaded with ``load_external_data=False``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from bridge.errors import InputError, UnsafeInputError

_PICKLE_PROTOCOL_2 = b"\x80"


def check_archive(path: Path) -> None:
    """Refuse a zip archive with an entry that would land outside its directory.

    `.pt2` and `.keras` must be zip archives; a `.pt` may also be a legacy pickle.
    """
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty; export the model again")
    if not zipfile.is_zipfile(path):
        if path.suffix.lower() in (".pt", ".pth"):
            with path.open("rb") as handle:
                if handle.read(1) == _PICKLE_PROTOCOL_2:
                    return
        raise InputError(
            f"{path}: not a {_KIND.get(path.suffix.lower(), 'model')} (not a zip archive); "
            "the file is damaged or not what its name says: export it again"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: a damaged zip archive ({exc}); export the model again") from exc
    for name in names:
        if escapes(name):
            raise UnsafeInputError(
                f"{path}: archive entry {name!r} points outside the archive's directory; "
                "refusing to extract it (the file was tampered with or badly made)"
            )


_KIND = {".pt2": "PyTorch ExportedProgram", ".keras": "Keras archive", ".pt": "PyTorch file", ".pth": "PyTorch file"}


def escapes(name: str) -> bool:
    """Whether a relative name points outside its directory: absolute, a drive, or a `..` part."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    return posix.is_absolute() or windows.is_absolute() or bool(windows.drive) or ".." in posix.parts or ".." in windows.parts


def is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives carry compiled code under ``<root>/code/``; torch.save pickles do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


def check_keras_archive(path: Path, *, trust_code: bool) -> None:
    """Refuse a `.keras` archive whose config holds a Lambda layer (Python code) unless trusted."""
    check_archive(path)
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise InputError(f"{path}: a zip archive without config.json, so not a Keras 3 model; save it with model.save('x.keras')")
        try:
            config = json.loads(archive.read("config.json"))
        except ValueError as exc:
            raise InputError(f"{path}: config.json is not valid JSON ({exc}); save the model again") from exc
    lambdas = _find_lambdas(config)
    if lambdas and not trust_code:
        raise UnsafeInputError(
            f"{path}: Lambda layer {lambdas[0]!r} carries Python code that loading would run; "
            "replace it with a registered layer, or pass --trust-code if you trust the file"
        )


def _find_lambdas(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("class_name") == "Lambda":
            found.append(str((node.get("config") or {}).get("name", "lambda")))
        for value in node.values():
            found.extend(_find_lambdas(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_find_lambdas(value))
    return found


def check_onnx_external_data(model: Any, model_path: Path) -> bool:
    """Refuse external data that resolves outside the model's directory (``..``, absolute, symlink); whether it has any."""
    base = model_path.resolve().parent
    external = False
    for tensor in _all_tensors(model.graph):
        if getattr(tensor, "data_location", 0) != 1:  # onnx.TensorProto.EXTERNAL
            continue
        external = True
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not location or escapes(location):
            raise UnsafeInputError(
                f"{model_path}: tensor {tensor.name!r} reads external data from {location!r}, outside the "
                "model's directory; refusing to load it (keep external data files beside the model)"
            )
        target = (base / location).resolve()
        if base not in target.parents:
            raise UnsafeInputError(
                f"{model_path}: tensor {tensor.name!r} external data {location!r} resolves to {target}, "
                "outside the model's directory (a symlink?); refusing to load it"
            )
        if not target.is_file():
            raise InputError(
                f"{model_path}: tensor {tensor.name!r} needs external data file {location!r}, which is missing; "
                "copy it beside the model"
            )
    return external


def _all_tensors(graph: Any) -> list[Any]:
    """Every tensor of `graph` and its subgraphs that can hold data: initializers, sparse ones' values and indices,
    and attributes'."""
    tensors = list(graph.initializer)
    for sparse in graph.sparse_initializer:
        tensors.extend((sparse.values, sparse.indices))
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            tensors.extend(attr.tensors)
            if attr.HasField("sparse_tensor"):
                tensors.extend((attr.sparse_tensor.values, attr.sparse_tensor.indices))
            for sparse in attr.sparse_tensors:
                tensors.extend((sparse.values, sparse.indices))
            if attr.HasField("g"):
                tensors.extend(_all_tensors(attr.g))
            for sub in attr.graphs:
                tensors.extend(_all_tensors(sub))
    return tensors
