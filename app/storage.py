"""Folders of stored files: instances (``.dcm``) and worklist entries (``.wl``).

Files are published atomically. A new file is written under a temporary
name that the listing ignores, then linked to its final name, which fails
instead of overwriting when the name is taken. A crash therefore never leaves
a half-written file under a listed name. Each temporary name carries the
writer's process ID, so a worker that starts removes the temporary files of
processes that no longer run.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import InvalidRequest, NotFound, Unavailable

logger = logging.getLogger(__name__)

TEMPORARY_PREFIX = ".tmp-"

# A temporary file this old is removed even if a process with its writer's
# ID runs, because no write takes this long and process IDs are reused.
STALE_TEMPORARY_SECONDS = 3600


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
        return self.root / f"{TEMPORARY_PREFIX}{os.getpid()}-{uuid.uuid4().hex}{suffix}"

    def publish(self, temporary: Path, filename: str | None = None) -> Path:
        """Give the finished ``temporary`` file its final name.

        Without ``filename`` a new unique name is chosen. With one, an
        existing file of that name is replaced atomically.
        """
        try:
            if filename is not None:
                final = self.root / filename
                os.replace(temporary, final)
                return final
            return self._link_unique(temporary)
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
        path = self.resolve(filename)
        path.unlink()
        logger.info("Deleted %s %s", self.kind, filename)

    def entries(self) -> Iterator[StoredFile]:
        """Yield every listed file; files that vanish meanwhile are skipped."""
        try:
            scanner = os.scandir(self.root)
        except FileNotFoundError:
            return
        with scanner:
            for entry in scanner:
                if not self.pattern.fullmatch(entry.name):
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                yield StoredFile(
                    filename=entry.name,
                    path=Path(entry.path),
                    size=stat.st_size,
                    created=getattr(stat, "st_birthtime", stat.st_ctime),
                    modified=stat.st_mtime,
                )

    def listing(self, limit: int | None, offset: int) -> tuple[int, list[StoredFile]]:
        """Return the number of files and one page of them, newest first."""
        files = sorted(self.entries(), key=lambda item: (item.modified, item.filename), reverse=True)
        page = files[offset:] if limit is None else files[offset : offset + limit]
        return len(files), page

    def remove_temporary_files(self, max_age: float = STALE_TEMPORARY_SECONDS) -> int:
        """Remove orphaned temporary files and return how many were removed.

        A temporary file is orphaned when the process that wrote it no longer
        runs, or when it is older than ``max_age`` seconds.
        """
        removed = 0
        now = time.time()
        for path in self.root.glob(f"{TEMPORARY_PREFIX}*"):
            try:
                orphaned = not _process_running(_writer_pid(path.name))
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


def _writer_pid(name: str) -> int:
    digits = name[len(TEMPORARY_PREFIX) :].split("-", 1)[0]
    return int(digits) if digits.isdigit() else 0


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
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat().replace("+00:00", "Z")
