"""Property tests of the readers of untrusted files: manifests, reports, inputs files.

Real files (a conversion of the zoo MLP, its verify report, an inputs file) are mutated by
hypothesis: values replaced by other types, huge numbers, unicode, paths out of the folder; keys
removed; the text truncated. Each reader must return its record or raise InputError: never another
exception, never a file opened outside the folder, never code run. The CLI is run on a few of
them too: exit 2, one line, no traceback. Cases found here are kept in fixtures/hostile/folders.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bridge
from bridge.errors import InputError
from bridge.inputs import check_inputs, load_npz
from bridge.manifest import Manifest
from bridge.verification.report import Report
from bridge.verification.run import check_digests, subjects_of
from tests.conftest import run_bridge

pytestmark = pytest.mark.slow
FUZZ = settings(max_examples=int(os.environ.get("BRIDGE_FUZZ_EXAMPLES", "60")), deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
"""60 examples per reader in the default run; BRIDGE_FUZZ_EXAMPLES=2000 for a longer search."""

# Every file any reader opens is recorded while `_watching` is on (an audit hook cannot be removed,
# so one is added for the session and switched on and off).
_opened: list[str] = []
_watching = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _watching and event == "open" and args and isinstance(args[0], (str, bytes, Path)):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)
ALLOWED_ROOTS = tuple(str(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix, Path(bridge.__file__).parent})


@contextmanager
def _only_inside(folder: Path) -> Iterator[None]:
    global _watching
    _opened.clear()
    _watching = True
    try:
        yield
    finally:
        _watching = False
    root = str(folder.resolve())
    outside = [p for p in _opened if not str(Path(p).resolve()).startswith((root, *ALLOWED_ROOTS))]
    assert not outside, f"a reader opened files outside the folder: {outside}"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10**30, max_value=10**300)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
    | st.sampled_from(["../outside.onnx", "/etc/passwd", "\udcff", "nonsense", "bridge.zoo.torch_models:build_mlp",
                       "onnx", "x" * 5000]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


def _mutate(text: str, data: st.DataObject) -> str:
    """One mutation of a JSON document: a value replaced, a key removed, or the text cut short."""
    doc = json.loads(text)
    action = data.draw(st.sampled_from(["replace", "remove", "truncate"]))
    if action == "truncate":
        return text[: data.draw(st.integers(0, len(text) - 1))]
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if action == "remove" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_VALUES)
    return json.dumps(doc)


@pytest.fixture(scope="module")
def folder_text(converted_mlp: Path) -> str:
    return (converted_mlp / "manifest.json").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def report_text(converted_mlp: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("report") / "report.json"
    result = run_bridge("verify", str(converted_mlp), "--device", "cpu", "--samples", "2", "--latency-runs", "2",
                        "--json", str(path))
    assert result.returncode == 0, result.stderr
    return path.read_text(encoding="utf-8")


@FUZZ
@given(data=st.data())
def test_a_mutated_manifest_is_read_or_refused_never_crashes(data: st.DataObject, converted_mlp: Path,
                                                            folder_text: str, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    if not folder.exists():
        shutil.copytree(converted_mlp, folder)
    (folder / "manifest.json").write_text(_mutate(folder_text, data), encoding="utf-8", errors="surrogatepass")
    with _only_inside(folder):
        try:
            manifest = Manifest.read(folder)
            subjects, _ = subjects_of(manifest, folder)
            check_digests(subjects, allow_changed=True)
        except InputError as exc:
            assert str(exc).startswith(str(folder)) and "\n" not in str(exc)


@FUZZ
@given(data=st.data())
def test_a_mutated_report_is_read_or_refused_never_crashes(data: st.DataObject, report_text: str, tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(_mutate(report_text, data), encoding="utf-8", errors="surrogatepass")
    with _only_inside(tmp_path):
        try:
            report = Report.read(path)
        except InputError as exc:
            assert str(exc).startswith(str(path))
        else:
            assert report.exit_code in (0, 1, 2)
            json.dumps(report.to_json())


ARRAYS = st.sampled_from(["float32", "float64", "int64", "int8", "bool", "complex64", "U3"]).flatmap(
    lambda dtype: st.lists(st.integers(0, 3), min_size=0, max_size=4).map(
        lambda shape: np.zeros(shape, dtype=dtype)))


@FUZZ
@given(arrays=st.dictionaries(st.sampled_from(["x", "y", "X", "\u00e9"]), ARRAYS, max_size=3),
       corruption=st.sampled_from(["none", "truncate", "garbage", "object"]), cut=st.integers(1, 200))
def test_an_inputs_file_is_read_or_refused_never_crashes(arrays: dict[str, np.ndarray], corruption: str, cut: int,
                                                         converted_mlp: Path, tmp_path: Path) -> None:
    signature = Manifest.read(converted_mlp).source.signature
    path = tmp_path / "inputs.npz"
    if corruption == "object":
        np.savez(path, x=np.array([{"a": 1}], dtype=object))  # a pickle inside: must never be loaded
    else:
        np.savez(path, **arrays)
    if corruption == "truncate":
        path.write_bytes(path.read_bytes()[:cut])
    elif corruption == "garbage":
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("x.npy", b"\x93NUMPY garbage" * cut)
    with _only_inside(tmp_path):
        try:
            loaded = check_inputs(load_npz(path), signature, path)
        except InputError as exc:
            assert str(exc).startswith(str(path))
        else:
            assert set(loaded) == {s.name for s in signature.inputs}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_cli_refuses_a_mutated_manifest_in_one_line(data: st.DataObject, converted_mlp: Path, folder_text: str,
                                                        tmp_path: Path) -> None:
    folder = tmp_path / "cli"
    if not folder.exists():
        shutil.copytree(converted_mlp, folder)
    mutated = _mutate(folder_text, data)
    (folder / "manifest.json").write_text(mutated, encoding="utf-8", errors="surrogatepass")
    result = run_bridge("verify", str(folder), "--device", "cpu", "--samples", "1", "--latency-runs", "1")
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    assert result.returncode in (0, 1, 2), result.stderr
    if result.returncode == 2:
        assert result.stderr.startswith("bridge: ")
