"""The conversion cache: an unchanged re-convert is a copy, a change is a miss, a tampered entry is rebuilt."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import bridge
from bridge.cache import ENTRY_NAME, ConversionCache


@pytest.fixture(scope="module")
def first(zoo_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bridge.Conversion]:
    """The MLP converted to ONNX once, into a cache of this module's own."""
    cache = tmp_path_factory.mktemp("cache")
    conversion = bridge.convert(zoo_model("mlp"), "onnx", out_dir=tmp_path_factory.mktemp("first") / "mlp.bridge",
                                cache=cache)
    return cache, conversion


def test_an_unchanged_reconvert_is_a_copy_of_the_checked_artifacts(first: tuple[Path, bridge.Conversion],
                                                                   zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    cache, made = first
    assert not made.cached and made.cache_key is not None
    assert ConversionCache(cache).info().entries == 1
    again = bridge.convert(zoo_model("mlp"), "onnx", out_dir=tmp_path / "again.bridge", cache=cache)
    assert again.cached and again.cache_key == made.cache_key
    assert again.manifest == made.manifest  # the same source record, artifacts, checks and versions
    assert again.path("onnx").read_bytes() == made.path("onnx").read_bytes()
    assert (tmp_path / "again.bridge" / "source" / "mlp.pt2").is_file()  # the folder is whole, as convert makes it


def test_a_changed_option_or_a_disabled_cache_converts(first: tuple[Path, bridge.Conversion],
                                                       zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    cache, made = first
    other = bridge.convert(zoo_model("mlp"), "onnx", out_dir=tmp_path / "o17.bridge", cache=cache, opset=17)
    assert not other.cached and other.cache_key != made.cache_key
    off = bridge.convert(zoo_model("mlp"), "onnx", out_dir=tmp_path / "off.bridge", cache=False)
    assert not off.cached and off.cache_key is None


def test_a_tampered_entry_is_found_by_its_sha256_and_rebuilt(first: tuple[Path, bridge.Conversion],
                                                             zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    cache, made = first
    assert made.cache_key is not None
    entry = cache / "convert" / made.cache_key
    onnx = entry / made.manifest.artifact("onnx").path
    onnx.write_bytes(onnx.read_bytes()[:-8] + b"\0" * 8)  # a flipped tail: the same size, other bytes
    # A handler of its own on the `bridge` logger: the CLI's setup_logging (another test may have run it in this
    # worker) stops propagation to the root logger, where caplog listens.
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("bridge").addHandler(handler)
    try:
        rebuilt = bridge.convert(zoo_model("mlp"), "onnx", out_dir=tmp_path / "rebuilt.bridge", cache=cache)
    finally:
        logging.getLogger("bridge").removeHandler(handler)
    assert not rebuilt.cached
    assert any("does not match its sha256" in w and "runs again" in w for w in warnings), warnings
    assert rebuilt.path("onnx").read_bytes() == made.path("onnx").read_bytes()  # made again, and right
    assert (entry / ENTRY_NAME).is_file() and onnx.read_bytes() == made.path("onnx").read_bytes()  # stored again
    assert bridge.convert(zoo_model("mlp"), "onnx", out_dir=tmp_path / "hit.bridge", cache=cache).cached


def test_a_hit_counts_as_a_use_and_a_size_limit_keeps_the_conversion_just_made(
        zoo_model: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_CACHE_MAX_SIZE", raising=False)
    cache = ConversionCache(tmp_path / "limited")
    made = [bridge.convert(zoo_model("mlp"), "onnx", out_dir=tmp_path / f"o{opset}.bridge", cache=cache.location,
                           opset=opset) for opset in (18, 17)]
    entries = [cache.entries_dir / str(m.cache_key) for m in made]
    for age, entry in zip((2000, 1000), entries, strict=True):
        os.utime(entry, (time.time() - age, time.time() - age))
    hit = bridge.convert(zoo_model("mlp"), "onnx", out_dir=tmp_path / "hit.bridge", cache=cache.location, opset=18)
    assert hit.cached and entries[0].stat().st_mtime > time.time() - 60  # the oldest entry is now the newest use
    pruned = cache.prune(max_bytes=cache.info().bytes - 1)
    assert pruned.removed == 1 and entries[0].is_dir() and not entries[1].exists()
    monkeypatch.setenv("BRIDGE_CACHE_MAX_SIZE", "1")  # smaller than any entry: only the one just stored stays
    last = bridge.convert(zoo_model("mlp"), "onnx", out_dir=tmp_path / "o16.bridge", cache=cache.location, opset=16)
    assert not last.cached and [e.name for e in cache.entries_dir.iterdir()] == [last.cache_key]


def test_cache_info_and_clear_on_the_command_line(first: tuple[Path, bridge.Conversion]) -> None:
    cache, _ = first
    info = subprocess.run([sys.executable, "-m", "bridge", "cache", "info", "--cache-dir", str(cache)],
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and f"location: {cache}" in info.stdout and "entries:  " in info.stdout
    entries = int(info.stdout.split("entries:")[1].split()[0])
    assert entries >= 1
    cleared = subprocess.run([sys.executable, "-m", "bridge", "cache", "clear", "--cache-dir", str(cache)],
                             capture_output=True, text=True, timeout=60)
    assert cleared.returncode == 0 and cleared.stdout.startswith(f"removed {entries} cached conversion")
    assert ConversionCache(cache).info().entries == 0
