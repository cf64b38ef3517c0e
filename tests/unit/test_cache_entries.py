"""The conversion cache's key and its reading of entries, without a conversion: what changes the key, and what
makes an entry (perhaps from another machine) unusable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.cache import ENTRY_NAME, ConversionCache, _check_entry, open_cache
from bridge.formats import Format
from bridge.inputs import ExampleInputs
from bridge.options import ConvertOptions
from bridge.signature import TensorSpec

VERSIONS = {"onnx": "1.20.1", "torch": "2.15.0"}


@pytest.fixture
def stage(tmp_path: Path) -> Path:
    (tmp_path / "stage" / "source").mkdir(parents=True)
    (tmp_path / "stage" / "source" / "m.onnx").write_bytes(b"model bytes")
    return tmp_path / "stage"


def test_the_key_changes_with_bytes_targets_options_inputs_and_versions(stage: Path, tmp_path: Path) -> None:
    cache = ConversionCache(tmp_path / "cache")
    base = cache.key(stage, (Format.TFLITE,), ConvertOptions(), None, VERSIONS, "0.2.0")
    assert cache.key(stage, (Format.TFLITE,), ConvertOptions(), None, VERSIONS, "0.2.0") == base
    assert cache.key(stage, (Format.TFLITE,), ConvertOptions(timeout=5, max_memory=1 << 30), None, VERSIONS,
                     "0.2.0") == base  # limits do not change what is made
    changed = [
        cache.key(stage, (Format.TF,), ConvertOptions(), None, VERSIONS, "0.2.0"),
        cache.key(stage, (Format.TFLITE,), ConvertOptions(opset=17), None, VERSIONS, "0.2.0"),
        cache.key(stage, (Format.TFLITE,), ConvertOptions(), ExampleInputs((TensorSpec("x", (1, 4), "float32"),)),
                  VERSIONS, "0.2.0"),
        cache.key(stage, (Format.TFLITE,), ConvertOptions(), None, {**VERSIONS, "onnx": "1.21.0"}, "0.2.0"),
        cache.key(stage, (Format.TFLITE,), ConvertOptions(), None, VERSIONS, "0.3.0"),
    ]
    (stage / "source" / "m.onnx").write_bytes(b"model bytez")
    changed.append(cache.key(stage, (Format.TFLITE,), ConvertOptions(), None, VERSIONS, "0.2.0"))
    assert len({base, *changed}) == len(changed) + 1


def _entry(tmp_path: Path, key: str = "k" * 64) -> Path:
    out = tmp_path / "out"
    (out / "onnx").mkdir(parents=True)
    (out / "onnx" / "model.onnx").write_bytes(b"onnx")
    (out / "manifest.json").write_text("{}")
    (out / "source").mkdir()
    (out / "source" / "m.pt2").write_bytes(b"not stored")
    entry = ConversionCache(tmp_path / "cache").store(key, out)
    assert entry is not None
    return entry


def test_a_stored_entry_holds_the_folder_less_its_source_and_checks_out(tmp_path: Path) -> None:
    entry = _entry(tmp_path)
    assert not (entry / "source").exists()
    assert json.loads((entry / ENTRY_NAME).read_text())["files"].keys() == {"onnx/model.onnx", "manifest.json"}
    assert _check_entry(entry, "k" * 64) is None
    assert ConversionCache(tmp_path / "cache").info().entries == 1


@pytest.mark.parametrize(("tamper", "reason"), [
    (lambda e: (e / "onnx" / "model.onnx").write_bytes(b"ONNX"), "does not match its sha256"),
    (lambda e: (e / "onnx" / "model.onnx").unlink(), "its files differ from its list"),
    (lambda e: (e / "extra.bin").write_bytes(b"x"), "its files differ from its list"),
    (lambda e: ((e / "onnx" / "model.onnx").unlink(), (e / "onnx" / "model.onnx").symlink_to("/etc/passwd")),
     "does not match its sha256|is a link"),
    (lambda e: (e / ENTRY_NAME).write_text("{not json"), "not valid JSON"),
    (lambda e: (e / ENTRY_NAME).write_text(json.dumps({"schema": "bridge.cache-entry/1", "key": "other", "files": {}})),
     "not an entry for this key"),
])
def test_a_tampered_entry_is_not_used(tmp_path: Path, tamper, reason: str) -> None:  # type: ignore[no-untyped-def]
    entry = _entry(tmp_path)
    tamper(entry)
    problem = _check_entry(entry, "k" * 64)
    assert problem is not None and any(r in problem for r in reason.split("|"))
    restored = ConversionCache(tmp_path / "cache").restore("k" * 64, tmp_path / "stage")
    assert restored is None and not entry.exists()  # removed, so the conversion runs and stores it again


def test_the_cache_is_off_by_environment_unless_a_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_NO_CACHE", "1")
    assert open_cache(None) is None and open_cache(False) is None
    assert open_cache(tmp_path) is not None  # --cache-dir wins
    monkeypatch.setenv("BRIDGE_NO_CACHE", "0")
    monkeypatch.setenv("BRIDGE_CACHE_DIR", str(tmp_path / "shared"))
    opened = open_cache(None)
    assert opened is not None and opened.location == tmp_path / "shared"
