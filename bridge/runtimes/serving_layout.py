"""The TF Serving directory layout, read without importing TensorFlow: ``NAME/VERSION/saved_model.pb``.

TF Serving loads every version folder whose name is an integer and serves the highest; a folder
with another name is ignored by the server, so a model directory whose only SavedModel sits in
``NAME/latest/`` serves nothing. bridge refuses it with a line that says so.
"""

from __future__ import annotations

from pathlib import Path

from bridge.errors import InputError

WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
"""TF Serving reads at most this many warm-up records."""


def _versions(path: Path) -> list[Path]:
    try:
        return [child for child in path.iterdir() if child.is_dir() and (child / "saved_model.pb").is_file()]
    except OSError:
        return []


def is_tf_serving_dir(path: Path) -> bool:
    """A directory holding SavedModels one level down (numbered or not: `version_dir` refuses the unnumbered)."""
    return not (path / "saved_model.pb").exists() and bool(_versions(path))


def version_dir(path: Path) -> Path:
    """The version TF Serving would serve (the highest integer), or an InputError naming the folder and the fix."""
    found = _versions(path)
    numbered = [child for child in found if child.name.isdigit() and not child.is_symlink()]
    if not numbered:
        names = ", ".join(sorted(repr(child.name) for child in found)) or "none"
        raise InputError(f"{path}: a TF Serving model directory needs numbered version folders (NAME/1/saved_model.pb); "
                         f"found {names}: rename the version folder to an integer such as 1")
    chosen = max(numbered, key=lambda child: int(child.name))
    if not chosen.resolve().is_relative_to(path.resolve()):
        raise InputError(f"{chosen}: lies outside {path}; refusing to read it")
    return chosen
