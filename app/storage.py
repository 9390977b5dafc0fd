"""Folders of stored files: instances (``.dcm``) and worklist entries (``.wl``).

Files are published atomically. A new file is written under a temporary
name that the listing ignores, then linked to its final name, which fails
instead of overwriting when the name is taken. A crash therefore never leaves
a half-written file under a listed name. Each temporary name carries the
writer's process ID and start time, so a worker that starts removes the
temporary files of processes that no longer run, even when a new process has
taken the same ID.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG

from .errors import InvalidRequest, NotFound, Unavailable

logger = logging.getLogger(__name__)

TEMPORARY_PREFIX = ".tmp-"

# Lock file that delete and replace hold; its name matches no listing pattern.
LOCK_FILE = ".lock"

# A temporary file this old is removed even if a process with its writer's
# ID runs, because no write takes this long and process IDs are reused.
STALE_TEMPORARY_SECONDS = 3600

# Linux stamps a folder's mtime from a coarse clock (one timer tick), so two
# changes within one tick can leave the same mtime. A cached listing is
# reused on an unchanged folder mtime only if its scan began this many
# seconds after that mtime, far more than one tick.
FOLDER_MTIME_MARGIN = 1.0


@dataclass
class StoredFile:
    """A listed file and its metadata."""

    filename: str
    path: Path
    size: int
    created: float
    modified: float

    def as_dict(self) -> dict[str, object]:
        return {
            "filename": self.filename,
            "filepath": str(self.path),
            "size": self.size,
            "created": _iso(self.created),
            "modified": _iso(self.modified),
        }


class FileStore:
    """One folder of files whose names match ``pattern``."""

    def __init__(self, root: Path | str, pattern: str, kind: str) -> None:
        self.root = Path(root).resolve()
        self.pattern = re.compile(pattern)
        self.kind = kind
        # The previous listing, reused for the names whose inode is unchanged.
        self._listing_lock = threading.Lock()
        self._cached_inodes: dict[str, int] = {}
        self._cached_files: list[StoredFile] = []
        self._cached_folder_mtime: int | None = None

    def open(self) -> None:
        """Create the folder if needed and remove orphaned temporary files."""
        self.root.mkdir(parents=True, exist_ok=True)
        removed = self.remove_temporary_files()
        if removed:
            logger.info("Removed %d leftover temporary files from %s", removed, self.root)

    def check_usable(self) -> None:
        """Raise :class:`Unavailable` unless the folder exists and is writable."""
        if not self.root.is_dir():
            raise Unavailable(f"Storage folder {str(self.root)!r} does not exist.")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise Unavailable(f"Storage folder {str(self.root)!r} is not writable.")

    def resolve(self, filename: str) -> Path:
        """Return the path of ``filename`` inside the folder.

        Raises
        ------
        InvalidRequest
            If the name does not match the folder's pattern, which rules out
            separators, ``..``, NUL bytes and absolute paths.
        NotFound
            If no such file exists, or if the name is a symbolic link.
        """
        if not self.pattern.fullmatch(filename):
            raise InvalidRequest(
                f"Invalid {self.kind} filename {filename[:80]!r}.",
                {"filename": [f"Must match the pattern {self.pattern.pattern}."]},
            )

        path = self.root / filename
        if path.is_symlink():
            # The listing skips links, and deleting through one would remove
            # its target, so a link is never a stored file, wherever it leads.
            logger.warning("Rejected %s, which is a symbolic link", path)
            raise NotFound(f"{self.kind.capitalize()} {filename!r} not found.")
        try:
            resolved = path.resolve(strict=True)
        except (FileNotFoundError, RuntimeError):
            raise NotFound(f"{self.kind.capitalize()} {filename!r} not found.") from None

        if resolved.parent != self.root or not resolved.is_file():
            logger.warning("Rejected %s, which resolves outside %s", path, self.root)
            raise NotFound(f"{self.kind.capitalize()} {filename!r} not found.")
        return resolved

    def temporary_path(self, suffix: str = "") -> Path:
        """Return a new temporary path in the folder, ignored by the listing."""
        writer = f"{os.getpid()}-{_start_time(os.getpid())}"
        return self.root / f"{TEMPORARY_PREFIX}{writer}-{uuid.uuid4().hex}{suffix}"

    def publish(self, temporary: Path) -> Path:
        """Give the finished ``temporary`` file a new unique name and return it."""
        try:
            return self._link_unique(temporary)
        finally:
            temporary.unlink(missing_ok=True)

    def replace(self, temporary: Path, filename: str) -> Path:
        """Replace the stored file ``filename`` atomically with ``temporary``.

        Raises
        ------
        NotFound
            If ``filename`` no longer exists, for example because a delete
            came first. A replace never brings a deleted file back.
        """
        final = self.root / filename
        try:
            with self._changing():
                if not final.is_file() or final.is_symlink():
                    raise NotFound(f"{self.kind.capitalize()} {filename!r} not found.")
                os.replace(temporary, final)
            return final
        finally:
            temporary.unlink(missing_ok=True)

    def publish_preferred(self, temporary: Path, filename: str) -> Path:
        """Give the finished ``temporary`` file the name ``filename`` if it is free.

        When a file of that name exists, a new unique name is chosen instead,
        so unlike ``publish`` this never replaces a file.

        Raises
        ------
        ValueError
            If ``filename`` does not match the folder's pattern.
        """
        if not self.pattern.fullmatch(filename):
            raise ValueError(f"{filename!r} does not match {self.pattern.pattern}.")
        try:
            final = self.root / filename
            try:
                os.link(temporary, final)
            except FileExistsError:
                return self._link_unique(temporary)
            return final
        finally:
            temporary.unlink(missing_ok=True)

    def new_filename(self) -> str:
        """Return a candidate name ``instance_<milliseconds><6 random digits>.dcm``.

        The random digits keep names of one millisecond apart; ``publish``
        still retries if a name is taken.
        """
        milliseconds = time.time_ns() // 1_000_000
        return f"{self.kind}_{milliseconds}{secrets.randbelow(10**6):06d}{self.suffix}"

    @property
    def suffix(self) -> str:
        return ".dcm" if self.kind == "instance" else ".wl"

    def delete(self, filename: str) -> None:
        """Delete the stored file ``filename``; raise :class:`NotFound` if it is gone."""
        path = self.resolve(filename)
        with self._changing():
            try:
                path.unlink()
            except FileNotFoundError:
                raise NotFound(f"{self.kind.capitalize()} {filename!r} not found.") from None
        logger.info("Deleted %s %s", self.kind, filename)

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold the folder's lock file, so deletes and replaces do not interleave.

        ``flock`` works across the processes of every gunicorn worker.
        """
        with open(self.root / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def entries(self) -> Iterator[StoredFile]:
        """Yield every listed file, newest first, from the same cache as ``listing``."""
        yield from self._sorted_files()

    def listing(self, limit: int | None, offset: int) -> tuple[int, list[StoredFile]]:
        """Return the number of files and one page of them, newest first.

        The sorted files are cached per store, because one ``lstat`` per
        file made a page of 10,000 files take over 50 ms. A call stats only
        the files whose name or inode number is new since the previous call,
        and reads no folder entries while the folder's mtime is unchanged.
        """
        files = self._sorted_files()
        page = files[offset:] if limit is None else files[offset : offset + limit]
        return len(files), page

    def _sorted_files(self) -> list[StoredFile]:
        started = time.time()
        try:
            folder_mtime: int | None = os.stat(self.root).st_mtime_ns
        except FileNotFoundError:
            folder_mtime = None
        with self._listing_lock:
            if folder_mtime is not None and folder_mtime == self._cached_folder_mtime:
                return self._cached_files

        inodes = self._listed_inodes()
        settled = (
            folder_mtime is not None
            and started - folder_mtime / 1e9 > FOLDER_MTIME_MARGIN
        )
        with self._listing_lock:
            if inodes == self._cached_inodes:
                self._cached_folder_mtime = folder_mtime if settled else None
                return self._cached_files
            known = {item.filename: item for item in self._cached_files}
            known_inodes = self._cached_inodes

        # NOTE: a file rewritten in place keeps its inode number, so the
        # listing shows its old size and times until the file is renamed
        # or replaced. The service itself only publishes new inodes.
        files = []
        for name, inode in inodes.items():
            item = known.get(name)
            if item is None or known_inodes.get(name) != inode:
                item = self._stat_file(name)
            if item is not None:
                files.append(item)
        files.sort(key=lambda item: (item.modified, item.filename), reverse=True)

        with self._listing_lock:
            self._cached_inodes = inodes
            self._cached_files = files
            self._cached_folder_mtime = folder_mtime if settled else None
        return files

    def _listed_inodes(self) -> dict[str, int]:
        """Map each listed name to its inode number, from the folder alone."""
        try:
            scanner = os.scandir(self.root)
        except FileNotFoundError:
            return {}
        with scanner:
            return {
                entry.name: entry.inode()
                for entry in scanner
                if self.pattern.fullmatch(entry.name)
                and entry.is_file(follow_symlinks=False)
            }

    def _stat_file(self, name: str) -> StoredFile | None:
        path = self.root / name
        try:
            stat = path.lstat()
        except FileNotFoundError:
            return None
        if not S_ISREG(stat.st_mode):
            return None
        return StoredFile(
            filename=name,
            path=path,
            size=stat.st_size,
            created=getattr(stat, "st_birthtime", stat.st_ctime),
            modified=stat.st_mtime,
        )

    def remove_temporary_files(self, max_age: float = STALE_TEMPORARY_SECONDS) -> int:
        """Remove orphaned temporary files and return how many were removed.

        A temporary file is orphaned when the process that wrote it no longer
        runs, or when it is older than ``max_age`` seconds.
        """
        # NOTE: a DCMTK process started by a killed worker keeps running and
        # may still write its output file after this cleanup. That file stays
        # until the next start-up or until it is ``max_age`` seconds old.
        removed = 0
        now = time.time()
        for path in self.root.glob(f"{TEMPORARY_PREFIX}*"):
            try:
                orphaned = not _writer_running(path.name)
                if orphaned or now - path.stat().st_mtime >= max_age:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def _link_unique(self, temporary: Path) -> Path:
        for _ in range(100):
            final = self.root / self.new_filename()
            try:
                os.link(temporary, final)
            except FileExistsError:
                continue
            return final
        raise Unavailable(f"Could not find a free {self.kind} filename in {self.root}.")


def _writer_running(name: str) -> bool:
    """Return whether the process that wrote the temporary file ``name`` runs.

    Names are ``.tmp-<pid>-<start time>-<uuid>``. A running process with that
    ID but another start time is not the writer: containers give their
    workers the same process IDs after every restart.
    """
    parts = name[len(TEMPORARY_PREFIX) :].split("-")
    pid = int(parts[0]) if parts[0].isdigit() else 0
    if not _process_running(pid):
        return False

    recorded = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
    current = _start_time(pid)
    return recorded == 0 or current == 0 or recorded == current


def _start_time(pid: int) -> int:
    """Return when process ``pid`` started, in clock ticks after boot (0 if unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name (field 2) may contain spaces and parentheses, so the
    # fields are split after its last ")". The start time is field 22, proc(5).
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _process_running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
