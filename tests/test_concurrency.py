"""Concurrency and crash tests against the service running under gunicorn."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from app import create_app
from app.local_orthanc import LocalOrthanc, free_port

from .support import CONTRACT_EXAMPLE, app_config
from .test_faults import SlowProxy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")
TOKEN = "concurrency-test-token"
FILENAME = re.compile(r"^instance_[0-9]+\.dcm$")
START_TIMEOUT = 30
MAX_CONTENT_LENGTH = 64 * 1024


@dataclass
class Service:
    """A gunicorn master running the app, and where it stores files."""

    process: subprocess.Popen[bytes]
    url: str
    storage: Path
    session: requests.Session

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        headers = {"Authorization": f"Bearer {TOKEN}", **kwargs.pop("headers", {})}
        return self.session.request(method, self.url + path, headers=headers, **kwargs)

    def listing(self) -> list[str]:
        response = self.request("GET", "/api/dicom/instances", params={"limit": 1000})
        response.raise_for_status()
        return [item["filename"] for item in response.json()["data"]["files"]]

    def temporary_files(self) -> list[str]:
        return sorted(path.name for path in self.storage.glob(".tmp-*"))


def process_parent(pid: int) -> int | None:
    """Return the parent PID from /proc, or None if the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    state, parent = fields[0], int(fields[1])
    return None if state == "Z" else parent


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and process_parent(int(entry.name)) == pid:
            found.add(int(entry.name))
    return found


def wait_for(condition: Any, timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"Timed out after {timeout} s: {message}")


def start_service(
    tmp_path: Path, orthanc: LocalOrthanc, workers: int, path_prefix: str = ""
) -> Service:
    port = free_port()
    storage = tmp_path / "instances"
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": str(workers),
        "DICOM_STORAGE_DIR": str(storage),
        "WORKLIST_DIR": str(tmp_path / "worklists"),
        "ORTHANC_HOST": "127.0.0.1",
        "ORTHANC_DICOM_PORT": str(orthanc.settings.dicom_port),
        "ORTHANC_AET": orthanc.settings.aet,
        "ORTHANC_URL": orthanc.settings.url,
        "DICOM_AET": "TESTSCU",
        "DCMTK_TIMEOUT": "3",
        "API_TOKEN": TOKEN,
        "MAX_CONTENT_LENGTH": str(MAX_CONTENT_LENGTH),
        "PATH": path_prefix + os.environ["PATH"],
    }
    log = open(tmp_path / "gunicorn.log", "ab")
    process = subprocess.Popen(
        [str(GUNICORN), "-c", "gunicorn.conf.py", "app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    session = requests.Session()
    session.trust_env = False
    service = Service(process, f"http://127.0.0.1:{port}", storage, session)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited; see {tmp_path / 'gunicorn.log'}")
        try:
            return service.request("GET", "/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(ready, START_TIMEOUT, "gunicorn did not answer")
        wait_for(
            lambda: len(children(process.pid)) == workers, START_TIMEOUT, "workers"
        )
    except BaseException:
        stop_service(service)
        raise
    return service


def stop_service(service: Service) -> None:
    service.process.send_signal(signal.SIGTERM)
    try:
        service.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()
    service.session.close()


@pytest.fixture
def service(tmp_path: Path, orthanc: LocalOrthanc) -> Iterator[Service]:
    running = start_service(tmp_path, orthanc, workers=3)
    yield running
    stop_service(running)


def wait_for_replacement(service: Service, old_workers: set[int], killed: int) -> None:
    """Wait until gunicorn has started a worker in place of ``killed``."""

    def replaced() -> bool:
        current = children(service.process.pid)
        return killed not in current and len(current) == len(old_workers)

    wait_for(replaced, START_TIMEOUT, "gunicorn did not replace the killed worker")


def assert_files_intact(service: Service, expected: set[str]) -> None:
    listing = service.listing()
    assert sorted(listing) == sorted(expected)
    for name in listing:
        dataset = pydicom.dcmread(service.storage / name)
        assert len(dataset.PixelData) == dataset.Rows * dataset.Columns * 2
        assert dataset.SOPInstanceUID


# --- Concurrent creates --------------------------------------------------------


def test_concurrent_creates(service: Service) -> None:
    def create(index: int) -> requests.Response:
        body = {**CONTRACT_EXAMPLE, "patientID": f"PID-{index:04d}"}
        return service.request("POST", "/api/dicom/instances", json=body)

    with ThreadPoolExecutor(max_workers=24) as pool:
        responses = list(pool.map(create, range(200)))

    assert [response.status_code for response in responses] == [201] * 200
    data = [response.json()["data"] for response in responses]
    filenames = [item["filename"] for item in data]
    uids = [uid for item in data for uid in item["uids"].values()]
    assert len(set(filenames)) == 200
    assert all(FILENAME.match(name) for name in filenames), filenames
    assert len(set(uids)) == 600

    listing = service.listing()
    assert len(listing) == 200
    assert sorted(listing) == sorted(filenames)
    assert service.temporary_files() == []

    for item in data:
        dataset = pydicom.dcmread(service.storage / item["filename"])
        assert dataset.SOPInstanceUID == item["uids"]["sopInstanceUID"]
        assert dataset.StudyInstanceUID == item["uids"]["studyInstanceUID"]


# --- Token and body limit under gunicorn -------------------------------------------


def test_token_required_under_gunicorn(service: Service) -> None:
    without = service.session.get(service.url + "/api/dicom/instances", timeout=30)
    wrong = service.session.get(
        service.url + "/api/dicom/instances",
        headers={"Authorization": "Bearer wrong"},
        timeout=30,
    )
    health = service.session.get(service.url + "/health", timeout=30)

    assert without.status_code == 401
    assert without.json()["success"] is False
    assert wrong.status_code == 401
    assert health.status_code == 200


def test_body_limits_under_gunicorn(service: Service) -> None:
    payload = b'{"patientID": "' + b"x" * (2 * MAX_CONTENT_LENGTH) + b'"}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    # Each request gets its own connection, because the server closes one
    # whose request body it did not read.
    sized = service.request(
        "POST", "/api/dicom/instances", data=payload, headers={"Connection": "close"}
    )
    chunked = service.request(
        "POST", "/api/dicom/instances", data=chunks(), headers={"Connection": "close"}
    )

    for response in (sized, chunked):
        body = response.json()
        assert response.status_code == 413
        assert body["success"] is False
        assert body["data"] is None
        assert "MAX_CONTENT_LENGTH" in body["message"]
    assert service.listing() == []


def test_chunked_body_at_limit(service: Service) -> None:
    payload = b'{"patientID": "P1"' + b" " * MAX_CONTENT_LENGTH
    payload = payload[: MAX_CONTENT_LENGTH - 1] + b"}"

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    response = service.request("POST", "/api/dicom/instances", data=chunks())

    assert len(payload) == MAX_CONTENT_LENGTH
    assert response.status_code == 201, response.text
    assert len(service.listing()) == 1


# --- Worker killed in the middle of a request --------------------------------------

# A stand-in for dump2dcm. When armed, it writes part of the output file and
# waits for the release. Then it runs the real dump2dcm, as a conversion that
# outlives its killed worker would.
DUMP2DCM_SHIM = """#!{python}
import os, sys, time
from pathlib import Path

control = Path({control!r})
armed = control / "armed"
if armed.exists():
    armed.unlink()
    Path(sys.argv[-1]).write_bytes(bytes(128) + b"DICM" + bytes(64))
    started = control / "started.part"
    started.write_text(f"{{os.getppid()}} {{os.getpid()}}")
    started.rename(control / "started")
    deadline = time.monotonic() + 60
    while not (control / "released").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""


def install_shim(directory: Path, control: Path) -> None:
    real = shutil.which("dump2dcm")
    assert real is not None
    directory.mkdir()
    control.mkdir()
    shim = directory / "dump2dcm"
    shim.write_text(
        DUMP2DCM_SHIM.format(python=sys.executable, control=str(control), real=real)
    )
    shim.chmod(0o755)


def wait_until_gone(pid: int) -> None:
    wait_for(lambda: process_parent(pid) is None, 30, f"process {pid} did not exit")


def test_worker_killed_during_create(tmp_path: Path, orthanc: LocalOrthanc) -> None:
    control = tmp_path / "control"
    install_shim(tmp_path / "shim", control)
    service = start_service(
        tmp_path, orthanc, workers=2, path_prefix=f"{tmp_path / 'shim'}:"
    )
    try:
        first = service.request("POST", "/api/dicom/instances", json=CONTRACT_EXAMPLE)
        assert first.status_code == 201
        workers = children(service.process.pid)
        outcome: dict[str, Any] = {}

        def create() -> None:
            try:
                response = service.request(
                    "POST", "/api/dicom/instances", json=CONTRACT_EXAMPLE
                )
                outcome["status"] = response.status_code
            except requests.ConnectionError as error:
                outcome["error"] = error

        (control / "armed").touch()
        client = threading.Thread(target=create)
        client.start()
        started = wait_for(
            lambda: (
                (control / "started").exists() and (control / "started").read_text()
            ),
            15,
            "the create did not reach dump2dcm",
        )
        worker, shim = (int(value) for value in started.split())
        assert worker in workers
        # The worker has written the dump file and part of the output file.
        assert len(service.temporary_files()) == 2, service.temporary_files()

        os.kill(worker, signal.SIGKILL)
        (control / "released").touch()
        client.join(timeout=30)
        wait_until_gone(shim)
        wait_for_replacement(service, workers, worker)

        assert "status" not in outcome, outcome
        wait_for(
            lambda: service.temporary_files() == [],
            15,
            f"temporary files left after restart: {service.temporary_files()}",
        )
        assert_files_intact(service, {first.json()["data"]["filename"]})
    finally:
        stop_service(service)


def storescu_parent(workers: set[int]) -> int | None:
    for worker in workers:
        for child in children(worker):
            if process_name(child) == "storescu":
                return worker
    return None


def test_worker_killed_during_send(tmp_path: Path, orthanc: LocalOrthanc) -> None:
    service = start_service(tmp_path, orthanc, workers=2)
    proxy = SlowProxy(orthanc.settings.dicom_port, held=True)
    try:
        created = service.request("POST", "/api/dicom/instances", json=CONTRACT_EXAMPLE)
        filename = created.json()["data"]["filename"]
        content = (service.storage / filename).read_bytes()
        workers = children(service.process.pid)
        outcome: dict[str, Any] = {}

        def send() -> None:
            try:
                response = service.request(
                    "POST",
                    f"/api/dicom/instances/{filename}/send",
                    json={"host": "127.0.0.1", "port": proxy.port},
                )
                outcome["status"] = response.status_code
            except requests.ConnectionError as error:
                outcome["error"] = error

        client = threading.Thread(target=send)
        client.start()
        assert proxy.connected.wait(timeout=15)
        worker = wait_for(lambda: storescu_parent(workers), 10, "storescu not found")

        os.kill(worker, signal.SIGKILL)
        proxy.release()
        client.join(timeout=30)
        wait_for_replacement(service, workers, worker)

        assert "status" not in outcome, outcome
        assert service.temporary_files() == []
        assert_files_intact(service, {filename})
        assert (service.storage / filename).read_bytes() == content

        retried = service.request("POST", f"/api/dicom/instances/{filename}/send")
        assert retried.status_code == 200, retried.text
    finally:
        proxy.close()
        stop_service(service)


def start_time(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def test_start_up_removes_reused_pid_files(
    tmp_path: Path, orthanc: LocalOrthanc
) -> None:
    # Containers give workers the same process IDs after every restart, so a
    # leftover file may name a process ID that a new, unrelated process has.
    storage = tmp_path / "instances"
    storage.mkdir()
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = os.getpid()
    reused = storage / f".tmp-{pid}-1-{'a' * 32}.dcm"
    dead = storage / f".tmp-{exited.stdout.strip()}-1-{'b' * 32}.dcm"
    running = storage / f".tmp-{pid}-{start_time(pid)}-{'c' * 32}.dcm"
    for path in (reused, dead, running):
        path.write_bytes(bytes(132))

    create_app(app_config(tmp_path, orthanc))

    assert not reused.exists()
    assert not dead.exists()
    assert running.exists()
