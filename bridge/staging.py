"""Write into a hidden staging directory, then move it into place whole.

``prepare`` checks the destination before any work starts (exists without --force, parent not
writable) and makes ``.NAME.tmp-PID`` beside it; ``publish`` swaps it in. A run killed at any
moment leaves the previous complete output or none; stale staging directories of dead runs are
removed by the next run.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from bridge.errors import OutputError


def current_umask() -> int:
    """The process umask, read from /proc on Linux so no thread sees it changed; else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` through `write(handle)` so a reader sees the old file or the whole new one, never part.

    The file gets ordinary permissions (0666 less the umask), like any file the user writes.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of a UTF-8 text."""
    data = text.encode("utf-8")

    def write(handle: BinaryIO) -> None:
        handle.write(data)

    atomic_write(path, write)


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
        problem = "is a file, not a directory" if parent.exists() else "does not exist"
        raise OutputError(f"{final_dir}: cannot be created, its parent {parent} {problem}; choose another -o")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{final_dir}: cannot write in {parent} (permission denied); choose another -o")
    _sweep(parent, final_dir.name)
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-{os.getpid()}_", dir=parent))
        stage.chmod(0o777 & ~current_umask())  # mkdtemp makes it 0700; the published directory is an ordinary one
        return stage
    except OSError as exc:
        raise OutputError(f"{final_dir}: cannot create a staging directory in {parent} ({exc.strerror}); choose another -o") from exc


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _exchange(first: Path, second: Path) -> bool:
    """Swap two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def publish(stage: Path, final_dir: Path) -> None:
    """Move `stage` to `final_dir`, replacing an existing directory whole."""
    final_dir = final_dir.absolute()
    if not final_dir.exists():
        os.rename(stage, final_dir)
        return
    # One atomic swap: a kill at any instant leaves the previous output or the new one in place,
    # never neither. The old output ends up in `stage`, which the next run sweeps if this one dies.
    if _exchange(stage, final_dir):
        shutil.rmtree(stage, ignore_errors=True)
        return
    # Elsewhere two renames: a kill between them leaves no output (the docs' "or none").
    old = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.old-{os.getpid()}_", dir=final_dir.parent))
    os.rename(final_dir, old / "previous")
    os.rename(stage, final_dir)
    shutil.rmtree(old, ignore_errors=True)
