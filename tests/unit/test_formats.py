"""bridge.formats: one FormatSpec per format, and how a path is recognised."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import InputError
from bridge.formats import FORMATS, Format, detect


def test_every_format_has_one_spec_with_a_runner() -> None:
    assert set(FORMATS) == set(Format)
    for fmt, spec in FORMATS.items():
        assert spec.format is fmt and fmt.spec is spec and fmt.description == spec.description
        assert spec.artifact_name and (spec.suffixes or spec.marker or spec.recogniser)
        assert spec.runners and all(r.format is fmt for r in spec.runners)


@pytest.mark.parametrize(("name", "fmt"), [
    ("m.pt2", Format.TORCH), ("m.PT", Format.TORCH), ("m.onnx", Format.ONNX), ("m.tflite", Format.TFLITE),
    ("m.keras", Format.KERAS), ("m.h5", Format.KERAS), ("m.mar", Format.TORCHSERVE), ("m.jaxexport", Format.JAX),
])
def test_files_are_recognised_by_suffix(name: str, fmt: Format, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(b"x")
    assert detect(path) is fmt


def test_a_directory_is_recognised_by_its_marker(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"x")
    assert detect(tmp_path) is Format.TF


def test_a_tf_serving_directory_is_recognised_by_its_version_folders(tmp_path: Path) -> None:
    (tmp_path / "model" / "3").mkdir(parents=True)
    (tmp_path / "model" / "3" / "saved_model.pb").write_bytes(b"x")
    assert detect(tmp_path / "model") is Format.TF_SERVING
    assert detect(tmp_path / "model" / "3") is Format.TF


def test_unrecognised_paths_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        detect(tmp_path / "absent.onnx")
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="not a SavedModel.*no saved_model.pb or model.json inside"):
        detect(tmp_path / "d")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(InputError, match=r"suffix '.bin'.*\.onnx.*--from"):
        detect(tmp_path / "m.bin")


def test_parse_names_the_valid_formats() -> None:
    assert Format.parse(" ONNX ") is Format.ONNX and Format.parse(Format.TF) is Format.TF
    with pytest.raises(InputError, match="unknown format 'coreml': use one of torch, jax, onnx, tf, keras, tflite, tfjs"):
        Format.parse("coreml")
