"""The source layer decides what a model is before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import InputError
from bridge.formats import Format
from bridge.options import ConvertOptions
from bridge.sources import (
    DEFAULT_RESOLVERS,
    SourceKind,
    is_reference,
    load_factory,
    resolver_for,
)


@pytest.mark.parametrize(("name", "kind", "fmt"), [
    ("m.pt2", SourceKind.EXPORTED_PROGRAM, Format.TORCH),
    ("m.pt", SourceKind.TORCHSCRIPT, Format.TORCH),
    ("m.onnx", SourceKind.MODEL_FILE, Format.ONNX),
    ("m.tflite", SourceKind.MODEL_FILE, Format.TFLITE),
])
def test_files_are_identified_by_their_resolver(name: str, kind: SourceKind, fmt: Format, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(b"x")
    resolver = resolver_for(str(path))
    identified = resolver.identify(str(path), ConvertOptions())
    assert resolver.kind is kind and identified.format is fmt
    assert identified.default_out_dir == tmp_path / "m.bridge"


def test_a_factory_has_no_format_until_it_has_run() -> None:
    resolver = resolver_for("package.module:build")
    identified = resolver.identify("package.module:build", ConvertOptions())
    assert resolver.kind is SourceKind.FACTORY and identified.format is None
    assert identified.default_out_dir.name == "build.bridge"
    assert resolver.identify("p.m:build", ConvertOptions(from_format=Format.KERAS)).format is Format.KERAS


def test_references_and_paths_are_told_apart(tmp_path: Path) -> None:
    assert is_reference("bridge.zoo.torch_models:build_mlp")
    assert not is_reference("model.onnx") and not is_reference("C:/x")
    odd = tmp_path / "a:b"
    odd.write_bytes(b"x")
    assert not is_reference(str(odd))


def test_load_factory_errors_name_the_reference() -> None:
    with pytest.raises(InputError, match="cannot import bridge_no_such_module"):
        load_factory("bridge_no_such_module:build")
    with pytest.raises(InputError, match="no such factory"):
        load_factory("bridge.defaults:no_such_factory")
    with pytest.raises(InputError, match="not a function"):
        load_factory("bridge.defaults:SEED")


def test_an_object_no_resolver_claims() -> None:
    with pytest.raises(InputError, match="cannot convert a int"):
        resolver_for(3)
    assert [r.kind for r in DEFAULT_RESOLVERS][0] is SourceKind.FACTORY
