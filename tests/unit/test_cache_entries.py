"""The conversion cache's key and its reading of entries, without a conversion: what changes the key, and what
makes an entry (perhaps from another machine) unusable."""

from __future__ import annotations

import json
import os
import shutil
import time
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


def _aged(cache: ConversionCache, key: str, used: float, size: int) -> Path:
    """An entry of about `size` bytes last used at `used` (seconds since the epoch)."""
    out = cache.location.parent / f"out-{key[:4]}"
    (out / "onnx").mkdir(parents=True)
    (out / "onnx" / "model.onnx").write_bytes(b"w" * size)
    (out / "manifest.json").write_text("{}")
    entry = ConversionCache(cache.location).store(key, out)
    assert entry is not None
    os.utime(entry, (used, used))
    return entry


def test_prune_removes_the_least_recently_used_until_the_rest_fit(tmp_path: Path) -> None:
    cache = ConversionCache(tmp_path / "cache")
    now = time.time()
    old, middle, new = (_aged(cache, c * 64, now - age, 1000) for c, age in (("a", 300), ("b", 200), ("c", 100)))
    size = cache.info().bytes
    assert size > 3000
    os.utime(old)  # used now, as a hit does (tests/test_cache.py): "a" is the newest
    pruned = cache.prune(max_bytes=size - 1)
    assert (pruned.removed, pruned.kept) == (1, 2) and not middle.exists() and old.exists() and new.exists()
    assert pruned.freed > 1000 and pruned.kept_bytes == cache.info().bytes <= size - 1
    assert cache.prune(max_bytes=size).removed == 0  # already fits


def test_prune_by_age_and_the_entry_just_stored_stays(tmp_path: Path) -> None:
    cache = ConversionCache(tmp_path / "cache")
    now = time.time()
    stale = _aged(cache, "a" * 64, now - 40 * 86400, 10)
    recent = _aged(cache, "b" * 64, now - 3600, 10)
    dead_write = cache.location / "tmp" / "dead-run"
    dead_write.mkdir(parents=True)
    os.utime(dead_write, (now - 2 * 86400, now - 2 * 86400))
    pruned = cache.prune(older_than=30 * 86400)
    assert (pruned.removed, pruned.kept) == (1, 1) and not stale.exists() and recent.exists()
    assert not dead_write.exists()  # an unfinished write left by a run that died a day ago
    assert cache.prune(max_bytes=1, keep="b" * 64).removed == 0 and recent.exists()
    # With a limit, every store prunes to it and keeps what it has just stored.
    limited = ConversionCache(tmp_path / "cache", max_bytes=1)
    third = _aged(limited, "c" * 64, now, 10)  # _aged stores through an unlimited cache: nothing pruned yet
    assert recent.exists() and third.exists()
    out = tmp_path / "out-new"
    (out / "onnx").mkdir(parents=True)
    (out / "manifest.json").write_text("{}")
    stored = limited.store("d" * 64, out)
    assert stored is not None and stored.exists() and not recent.exists() and not third.exists()


def test_an_entry_removed_while_it_is_copied_is_a_miss_and_leaves_nothing(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _entry(tmp_path)
    cache = ConversionCache(tmp_path / "cache")
    real_copy = shutil.copy2

    def pruned_meanwhile(src: str, dst: str) -> object:
        copied = real_copy(src, dst)
        shutil.rmtree(entry)  # another run's prune, between two files
        return copied

    monkeypatch.setattr(shutil, "copy2", pruned_meanwhile)
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "source").mkdir()
    assert cache.restore("k" * 64, stage) is None
    assert sorted(p.name for p in stage.iterdir()) == ["source"]  # no half-copied artifacts left for the run


def test_cache_prune_and_its_limit_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from bridge.cli import main

    cache = ConversionCache(tmp_path / "cache")
    now = time.time()
    _aged(cache, "a" * 64, now - 3 * 86400, 2000)
    _aged(cache, "b" * 64, now, 2000)
    runner = CliRunner()
    monkeypatch.delenv("BRIDGE_CACHE_MAX_SIZE", raising=False)
    nothing = runner.invoke(main, ["cache", "prune", "--cache-dir", str(cache.location)])
    assert nothing.exit_code == 2 and "give --max-size SIZE, --older-than AGE" in nothing.output
    bad = runner.invoke(main, ["cache", "prune", "--cache-dir", str(cache.location), "--older-than", "soon"])
    assert bad.exit_code == 2 and "give an age such as 30d" in bad.output
    bad_size = runner.invoke(main, ["cache", "prune", "--cache-dir", str(cache.location), "--max-size", "big"])
    assert bad_size.exit_code == 2 and "--max-size 'big'" in bad_size.output
    aged = runner.invoke(main, ["cache", "prune", "--cache-dir", str(cache.location), "--older-than", "2d",
                                "--json", "-"])
    assert aged.exit_code == 0, aged.output
    assert json.loads(aged.output)["removed"] == 1 and cache.info().entries == 1
    monkeypatch.setenv("BRIDGE_CACHE_MAX_SIZE", "lots")
    wrong = runner.invoke(main, ["cache", "info", "--cache-dir", str(cache.location)])
    assert wrong.exit_code == 2 and "BRIDGE_CACHE_MAX_SIZE 'lots'" in wrong.output
    monkeypatch.setenv("BRIDGE_CACHE_MAX_SIZE", "1k")
    info = runner.invoke(main, ["cache", "info", "--cache-dir", str(cache.location)])
    assert info.exit_code == 0 and "at most" in info.output and "BRIDGE_CACHE_MAX_SIZE" in info.output
    by_limit = runner.invoke(main, ["cache", "prune", "--cache-dir", str(cache.location)])
    assert by_limit.exit_code == 0 and by_limit.output.startswith("removed 1 cached conversion ")
    assert cache.info().entries == 0
