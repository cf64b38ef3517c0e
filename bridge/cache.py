"""The conversion cache: a finished conversion stored under a key of everything that decides it.

The key is the sha256 of the source as staged (every file of ``source/``, and the calibration
samples of a quantization), the targets, the options that change what is made, the example
input specs, bridge's version and the sha256 of its code, and the version of every tool the hops
and runners drive. A
re-convert of an unchanged model copies the entry into the output directory instead of running
the hops; a changed byte, option or version is another key.

An entry is a directory ``convert/KEY/`` holding the output folder (without ``source/``, which the
run has already staged) and ``entry.json``: the sha256 of each of its files. An entry is read as
untrusted (the location may be shared between machines): a file missing, added or changed is a
miss, the entry is removed and the conversion runs and stores it again. Entries are written into
``tmp/`` and renamed into place, so two runs storing the same key at once leave one whole entry.

Location: ``cache=`` / ``--cache-dir``, else ``BRIDGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/bridge``
(``~/.cache/bridge``). ``cache=False``, ``--no-cache`` or ``BRIDGE_NO_CACHE=1`` turn it off.

Size: `prune` removes the entries unused for longest (an entry's mtime is its last use: `restore` touches
it) until the rest fit a size, and those unused for longer than an age. ``BRIDGE_CACHE_MAX_SIZE`` makes every
`store` prune to that size, never removing the entry it has just stored; ``bridge cache prune`` does it by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge import records
from bridge.errors import InputError
from bridge.formats import Format
from bridge.inputs import ExampleInputs
from bridge.manifest import MANIFEST_NAME, Manifest, sha256_of
from bridge.memory import parse_size
from bridge.options import ConvertOptions
from bridge.progress import log

ENTRY_NAME = "entry.json"
ENTRY_SCHEMA = "bridge.cache-entry/1"
MAX_ENTRY_BYTES = 4 << 20
UNKEYED_OPTIONS = frozenset({"timeout", "max_memory", "calibration", "calibration_data"})
"""Options that do not change what is made (limits), or whose content is keyed instead of their path."""
SKIPPED = frozenset({"source"})
"""Top-level names of the output folder an entry does not hold: the run stages them itself."""
STALE_WRITE_SECONDS = 24 * 3600
"""An unfinished write in ``tmp/`` older than this was left by a run that died; `prune` removes it."""


def default_location() -> Path:
    explicit = os.environ.get("BRIDGE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bridge"


def disabled_by_environment() -> bool:
    return os.environ.get("BRIDGE_NO_CACHE", "").strip().lower() not in ("", "0", "false", "no")


def max_size_from_environment() -> int | None:
    """``BRIDGE_CACHE_MAX_SIZE`` in bytes (``20GB``), or None when it is unset."""
    text = os.environ.get("BRIDGE_CACHE_MAX_SIZE", "").strip()
    return parse_size(text, "BRIDGE_CACHE_MAX_SIZE") if text else None


def open_cache(cache: bool | str | Path | None) -> ConversionCache | None:
    """The cache `convert` uses: None for the default (the environment may turn it off), False for none, or a path."""
    if cache is False or (cache is None or cache is True) and disabled_by_environment():
        return None
    return ConversionCache(default_location() if cache is None or cache is True else Path(cache),
                           max_bytes=max_size_from_environment())


@dataclass(frozen=True)
class CacheInfo:
    """What ``bridge cache info`` prints."""

    location: Path
    entries: int
    bytes: int
    oldest: float | None
    newest: float | None

    def to_json(self) -> dict[str, Any]:
        return {"location": str(self.location), "entries": self.entries, "bytes": self.bytes,
                "oldest": self.oldest, "newest": self.newest}


@dataclass(frozen=True)
class Pruned:
    """What `ConversionCache.prune` removed, and what it left."""

    removed: int
    freed: int
    kept: int
    kept_bytes: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConversionCache:
    """A directory of finished conversions, keyed by `key`; `max_bytes` makes every `store` prune to that size."""

    def __init__(self, location: Path, max_bytes: int | None = None) -> None:
        self.location = location
        self.max_bytes = max_bytes

    @property
    def entries_dir(self) -> Path:
        return self.location / "convert"

    def key(self, stage: Path, targets: Sequence[Format], options: ConvertOptions, specs: ExampleInputs | None,
            versions: Mapping[str, str], bridge_version: str) -> str:
        """The sha256 of everything that decides what a conversion staged in `stage` will make."""
        digest = hashlib.sha256()
        for part in ("source", "quantize"):
            if (stage / part).exists():
                digest.update(f"{part}:{sha256_of(stage / part)[0]}\n".encode())
        keyed = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name not in UNKEYED_OPTIONS}
        described = {
            "targets": [t.value for t in targets],
            "options": records.to_json(keyed),  # json.dumps sorts every mapping's keys below
            "inputs": None if specs is None else [[s.name, list(map(str, s.shape)), s.dtype] for s in specs.specs],
            "named": None if specs is None else specs.named,
            "bridge": bridge_version,
            "code": code_digest(),
            "tools": dict(sorted(versions.items())),
        }
        digest.update(json.dumps(described, sort_keys=True, default=str).encode())
        return digest.hexdigest()

    def restore(self, key: str, stage: Path) -> Manifest | None:
        """Copy entry `key` into `stage` and return its manifest; None when there is none or it does not check out."""
        entry = self.entries_dir / key
        if not entry.is_dir():
            return None
        problem = _check_entry(entry, key)
        if problem is not None:
            log.warning("cache entry %s: %s; it is removed and the conversion runs again", entry, problem)
            self._remove(entry)
            return None
        try:
            manifest = Manifest.read(entry)
        except InputError as exc:
            log.warning("cache entry %s: %s; it is removed and the conversion runs again", entry, exc)
            self._remove(entry)
            return None
        copied: list[Path] = []
        try:
            for item in sorted(entry.iterdir()):
                if item.name == ENTRY_NAME:
                    continue
                copied.append(stage / item.name)
                if item.is_dir():
                    shutil.copytree(item, stage / item.name, dirs_exist_ok=True)
                else:
                    shutil.copy2(item, stage / item.name)
            os.utime(entry)  # the last use, for `prune`
        except OSError as exc:  # another run pruned or cleared it while it was copied
            log.warning("cache entry %s went away while it was read (%s); the conversion runs", entry, exc)
            for path in copied:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            return None
        return manifest

    def store(self, key: str, out_dir: Path) -> Path | None:
        """Copy the published folder `out_dir` in as entry `key` (kept as it is when another run stored it first)."""
        entry = self.entries_dir / key
        if entry.is_dir():
            return entry
        tmp_root = self.location / "tmp"
        try:
            tmp_root.mkdir(parents=True, exist_ok=True)
            self.entries_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f"{key[:12]}-", dir=tmp_root))
        except OSError as exc:
            log.warning("conversion cache %s: cannot write (%s); the conversion is not cached", self.location, exc)
            return None
        try:
            files: dict[str, str] = {}
            for item in sorted(out_dir.rglob("*")):
                relative = item.relative_to(out_dir)
                if relative.parts[0] in SKIPPED or item.is_symlink():
                    continue
                if item.is_dir():
                    (tmp / relative).mkdir(parents=True, exist_ok=True)
                elif item.is_file():
                    (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(item, tmp / relative)
                    files[relative.as_posix()] = sha256_of(tmp / relative)[0]
            (tmp / ENTRY_NAME).write_text(json.dumps({"schema": ENTRY_SCHEMA, "key": key, "created": time.time(),
                                                      "files": files}, indent=1) + "\n")
            os.rename(tmp, entry)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if entry.is_dir():  # another run stored the same key first
                return entry
            log.warning("conversion cache %s: cannot store %s (%s); the conversion is not cached", self.location, key, exc)
            return None
        if self.max_bytes is not None:
            pruned = self.prune(max_bytes=self.max_bytes, keep=key)
            if pruned.removed:
                log.info("conversion cache %s: removed %d least recently used entr%s (%d bytes) to stay under its "
                         "limit of %d bytes", self.location, pruned.removed, "y" if pruned.removed == 1 else "ies",
                         pruned.freed, self.max_bytes)
        return entry

    def info(self) -> CacheInfo:
        entries = self._entries()
        size = sum(size for _, _, size in entries)
        times = [used for _, used, _ in entries]
        return CacheInfo(self.location, len(entries), size, min(times, default=None), max(times, default=None))

    def prune(self, max_bytes: int | None = None, older_than: float | None = None, keep: str | None = None,
              now: float | None = None) -> Pruned:
        """Remove the entries unused for over `older_than` seconds, then the least recently used ones until the rest
        take at most `max_bytes`; entry `keep` stays whatever its size. Unfinished writes left by a dead run go too."""
        now = time.time() if now is None else now
        self._remove_stale_writes(now)
        entries = sorted(self._entries(), key=lambda e: e[1])  # least recently used first
        total = sum(size for _, _, size in entries)
        removed = freed = 0
        for entry, used, size in entries:
            if entry.name == keep:
                continue
            too_old = older_than is not None and now - used > older_than
            too_big = max_bytes is not None and total > max_bytes
            if not (too_old or too_big):
                continue
            if self._remove(entry):
                removed, freed, total = removed + 1, freed + size, total - size
        return Pruned(removed, freed, len(entries) - removed, total)

    def _entry_dirs(self) -> list[Path]:
        return [e for e in self.entries_dir.iterdir() if e.is_dir()] if self.entries_dir.is_dir() else []

    def _entries(self) -> list[tuple[Path, float, int]]:
        """Every entry with its last use and its size; one that another run removes meanwhile is left out."""
        found = []
        for entry in self._entry_dirs():
            try:
                if entry.is_symlink():  # not walked: it leads out of the cache
                    continue
                size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file() and not f.is_symlink())
                found.append((entry, entry.stat().st_mtime, size))
            except OSError:
                continue
        return found

    def _remove_stale_writes(self, now: float) -> None:
        tmp_root = self.location / "tmp"
        for item in tmp_root.iterdir() if tmp_root.is_dir() else ():
            try:
                stale = now - item.lstat().st_mtime > STALE_WRITE_SECONDS
            except OSError:
                continue
            if stale and item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)

    def clear(self) -> int:
        """Remove every entry (and unfinished writes); the number of entries removed."""
        entries = self._entry_dirs()
        for entry in entries:
            self._remove(entry)
        shutil.rmtree(self.location / "tmp", ignore_errors=True)
        return len(entries)

    def _remove(self, entry: Path) -> bool:
        """Remove `entry`; False when it was already gone (another run removed it) or cannot be moved."""
        # Renamed aside first: a reader never sees half an entry.
        aside = self.location / "tmp" / f"removed-{entry.name}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry, aside)
        except OSError:
            return False
        shutil.rmtree(aside, ignore_errors=True)
        return True


def _check_entry(entry: Path, key: str) -> str | None:
    """Why entry `key` cannot be used, or None: its list read as untrusted, then every file's sha256."""
    listing = entry / ENTRY_NAME
    if not listing.is_file() or listing.is_symlink():
        return f"no {ENTRY_NAME}"
    if listing.stat().st_size > MAX_ENTRY_BYTES:
        return f"{ENTRY_NAME} is larger than any bridge writes"
    try:
        data = json.loads(listing.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return f"{ENTRY_NAME} is not valid JSON"
    if not isinstance(data, dict) or data.get("schema") != ENTRY_SCHEMA or data.get("key") != key \
            or not isinstance(data.get("files"), dict):
        return f"{ENTRY_NAME} is not an entry for this key"
    files: dict[str, Any] = data["files"]
    on_disk = {p.relative_to(entry).as_posix() for p in entry.rglob("*") if p.is_file() or p.is_symlink()} - {ENTRY_NAME}
    if set(files) != on_disk:
        extra = sorted(on_disk - set(files)) or sorted(set(files) - on_disk)
        return f"its files differ from its list ({extra[0][:120]})"
    if MANIFEST_NAME not in files:
        return f"no {MANIFEST_NAME}"
    for name, expected in files.items():
        path = entry / name
        if path.is_symlink() or not path.resolve().is_relative_to(entry.resolve()):
            return f"{name[:120]} is a link or leaves the entry"
        if not isinstance(expected, str) or sha256_of(path)[0] != expected:
            return f"{name[:120]} does not match its sha256"
    return None


@functools.cache
def code_digest() -> str:
    """The sha256 of bridge's own code and data files: a changed hop in a development install is another key."""
    package = Path(__file__).resolve().parent
    files = []
    for root, dirs, names in os.walk(package):
        dirs[:] = [d for d in dirs if d not in ("node_modules", "__pycache__")]  # npm's packages are pinned by the lock
        files += [Path(root, n) for n in names if n.endswith((".py", ".json", ".js"))]
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
