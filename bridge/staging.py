"""Write into a hidden staging directory, then move it into place whole.

``prepare`` checks the destination before any work starts (exists without --force, parent not
writable) and makes ``.NAME.tmp-PID`` beside it; ``publish`` swaps it in. A run killed at any
moment leaves the previous complete output or none; stale staging directories of dead runs are
removed by the next run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bridge.errors import OutputError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(parent: Path, name: str) -> None:
    """Remove staging and swap directories left by runs that were killed."""
    for stale in parent.glob(f".{name}.*-*"):
        tag = stale.name.rsplit("-", 1)[-1]
        pid = tag.split("_")[0]
        if stale.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def prepare(final_dir: Path, *, force: bool) -> Path:
    """Check `final_dir` can be written and return a fresh staging directory beside it."""
    final_dir = final_dir.absolute()
    parent = final_dir.parent
    if final_dir.exists() and not final_dir.is_dir():
        raise OutputError(f"{final_dir}: exists and is not a directory; choose another -o")
    if final_dir.exists() and not force:
        raise OutputError(f"{final_dir}: already exists; pass --force to replace it, or choose another -o")
    if not parent.is_dir():
        raise OutputError(f"{parent}: the output directory's parent does not exist; create it or choose another -o")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{final_dir}: cannot write in {parent} (permission denied); choose another -o")
    _sweep(parent, final_dir.name)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-{os.getpid()}_", dir=parent, suffix=""))
    except OSError as exc:
        raise OutputError(f"{final_dir}: cannot create a staging directory in {parent} ({exc.strerror}); choose another -o") from exc


def publish(stage: Path, final_dir: Path) -> None:
    """Move `stage` to `final_dir`, replacing an existing directory whole."""
    final_dir = final_dir.absolute()
    if not final_dir.exists():
        os.rename(stage, final_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.old-{os.getpid()}_", dir=final_dir.parent))
    os.rename(final_dir, old / "previous")
    os.rename(stage, final_dir)
    shutil.rmtree(old, ignore_errors=True)
