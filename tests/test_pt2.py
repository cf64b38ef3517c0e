"""The .pt2 signature read from the archive's JSON equals the one torch reports after loading it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.formats import Format
from bridge.isolation import run_isolated
from bridge.messages import InspectRequest
from bridge.pt2 import read_signature
from bridge.runtimes.registry import DEFAULT_RUNNERS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["cnn", "two_io", "embedding", "dynamic_batch", "transformer"])
def test_json_signature_matches_torch(name: str, zoo_model: Callable[[str], Path]) -> None:
    path = zoo_model(name)
    fast = read_signature(path)
    assert fast is not None
    loaded = run_isolated(InspectRequest(DEFAULT_RUNNERS.primary(Format.TORCH), path), stage="inspect").signature
    assert fast == loaded


def test_not_a_program_gives_none(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "x.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/models/model.json", "{}")
    assert read_signature(path) is None
