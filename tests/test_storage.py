"""Tests of the file store: names, confinement and orphaned temporary files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from app.errors import InvalidRequest, NotFound, Unavailable
from app.services import INSTANCE_PATTERN
from app.storage import FileStore


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    files = FileStore(tmp_path / "instances", INSTANCE_PATTERN, "instance")
    files.open()
    return files


def publish_bytes(store: FileStore, data: bytes) -> Path:
    temporary = store.temporary_path(".dcm")
    temporary.write_bytes(data)
    return store.publish(temporary)


def test_publish_gives_unique_names(store: FileStore) -> None:
    paths = [publish_bytes(store, b"x") for _ in range(200)]

    assert len({path.name for path in paths}) == 200
    assert all(store.pattern.fullmatch(path.name) for path in paths)
    assert not list(store.root.glob(".tmp-*"))


def test_publish_never_overwrites(store: FileStore, monkeypatch: pytest.MonkeyPatch) -> None:
    first = publish_bytes(store, b"first")
    names = iter([first.name, "instance_2.dcm"])
    monkeypatch.setattr(store, "new_filename", lambda: next(names))

    second = publish_bytes(store, b"second")

    assert second.name == "instance_2.dcm"
    assert first.read_bytes() == b"first"


def test_listing_ignores_temporary_files(store: FileStore) -> None:
    publish_bytes(store, b"x")
    store.temporary_path(".dcm").write_bytes(b"partial")

    count, files = store.listing(None, 0)

    assert count == 1
    assert files[0].filename.startswith("instance_")


def test_open_removes_orphaned_temporary_files(store: FileStore) -> None:
    dead_pid = _dead_pid()
    orphan = store.root / f".tmp-{dead_pid}-abc.dcm"
    orphan.write_bytes(b"partial")
    live = store.temporary_path(".dcm")
    live.write_bytes(b"in progress")

    store.open()

    assert not orphan.exists()
    assert live.exists()


@pytest.mark.parametrize(
    "name",
    ["../x.dcm", "/etc/passwd", "instance_1.dcm/..", "instance_1.dcm\x00", "instance_.dcm",
     "x" * 300],
)  # fmt: skip
def test_resolve_rejects_bad_names(store: FileStore, name: str) -> None:
    with pytest.raises(InvalidRequest):
        store.resolve(name)


def test_resolve_rejects_symlink_outside(store: FileStore, tmp_path: Path) -> None:
    target = tmp_path / "outside.dcm"
    target.write_bytes(b"x")
    (store.root / "instance_5.dcm").symlink_to(target)

    with pytest.raises(NotFound):
        store.resolve("instance_5.dcm")


def test_check_usable_reports_missing_folder(store: FileStore) -> None:
    store.root.rmdir()

    with pytest.raises(Unavailable, match="does not exist"):
        store.check_usable()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
