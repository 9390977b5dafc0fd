"""Fault tests: a PACS that is down, rejects, stalls or is slow, and DCMTK missing."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from pydicom.uid import generate_uid

from app import create_app
from app.local_orthanc import LocalOrthanc

from .support import CONTRACT_EXAMPLE, app_config, start_orthanc

DCMTK_TIMEOUT = 3
# Seconds allowed beyond DCMTK_TIMEOUT for the process margin of app.dcmtk
# (2 s) and for starting processes on a busy machine.
MARGIN = 3


@contextmanager
def silent_server() -> Iterator[int]:
    """Listen on a loopback port, accept connections and never send a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    # A blocked accept() does not return when another thread closes the
    # socket, so the loop polls a stop flag.
    listener.settimeout(0.2)
    stopped = threading.Event()
    accepted: list[socket.socket] = []

    def accept() -> None:
        while not stopped.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopped.set()
        thread.join(timeout=5)
        listener.close()
        for connection in accepted:
            connection.close()


class SlowProxy:
    """A loopback TCP proxy that holds back or delays what the upstream peer sends.

    Until ``release`` is called, nothing flows from upstream to the client.
    After that each chunk from upstream waits ``delay`` seconds.
    """

    def __init__(
        self, upstream_port: int, delay: float = 0.0, held: bool = False
    ) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.connected = threading.Event()
        self.released = threading.Event()
        if not held:
            self.released.set()
        self.stopped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self._start(self._accept)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.stopped.set()
        self.released.set()
        self.threads[0].join(timeout=5)
        self.listener.close()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _start(self, target: Callable[..., None], *arguments: Any) -> None:
        thread = threading.Thread(target=target, args=arguments, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            self.connected.set()
            self._start(self._pump, client, upstream, 0.0, False)
            self._start(self._pump, upstream, client, self.delay, True)

    def _pump(
        self, source: socket.socket, target: socket.socket, delay: float, gated: bool
    ) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                if gated:
                    self.released.wait(timeout=60)
                time.sleep(delay)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                target.shutdown(socket.SHUT_WR)
            except OSError:
                pass


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOrthanc]:
    """An Orthanc with AE title checking, shared by the tests of this module."""
    server = start_orthanc(tmp_path_factory.mktemp("pacs"), check_called_aet=True)
    yield server
    server.stop()


@pytest.fixture
def fault_app(tmp_path: Path, pacs: LocalOrthanc) -> Flask:
    application = create_app(app_config(tmp_path, pacs, DCMTK_TIMEOUT=DCMTK_TIMEOUT))
    application.testing = True
    return application


@pytest.fixture
def fault_client(fault_app: Flask) -> FlaskClient:
    return fault_app.test_client()


def create_file(client: FlaskClient) -> Path:
    response = client.post("/api/dicom/instances", json=CONTRACT_EXAMPLE)
    assert response.status_code == 201, response.get_json()
    return Path(response.get_json()["data"]["filepath"])


def timed_send(
    client: FlaskClient, filename: str, body: dict[str, Any] | None = None
) -> tuple[Any, float]:
    started = time.monotonic()
    response = client.post(f"/api/dicom/instances/{filename}/send", json=body)
    return response, time.monotonic() - started


def orthanc_has(server: LocalOrthanc, path: Path) -> bool:
    session = requests.Session()
    session.trust_env = False
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    response = session.post(f"{server.settings.url}/tools/lookup", data=uid, timeout=10)
    response.raise_for_status()
    return bool(response.json())


def assert_kept(client: FlaskClient, path: Path, content: bytes) -> None:
    listing = client.get("/api/dicom/instances").get_json()["data"]["files"]
    assert path.read_bytes() == content
    assert [item["filename"] for item in listing].count(path.name) == 1


def assert_pacs_error(response: Any, elapsed: float, fragment: str) -> None:
    body = response.get_json()
    assert response.status_code == 502, body
    assert body["success"] is False
    assert body["data"] is None
    assert fragment in body["message"], body["message"]
    assert elapsed < DCMTK_TIMEOUT + MARGIN, elapsed


# --- PACS faults ----------------------------------------------------------------


def test_send_with_orthanc_stopped(
    tmp_path: Path, orthanc_factory: Callable[..., LocalOrthanc]
) -> None:
    server = orthanc_factory()
    app = create_app(app_config(tmp_path, server, DCMTK_TIMEOUT=DCMTK_TIMEOUT))
    client = app.test_client()
    path = create_file(client)
    content = path.read_bytes()
    server.stop()

    response, elapsed = timed_send(client, path.name)

    assert_pacs_error(response, elapsed, "Connection refused")
    assert_kept(client, path, content)

    server.start()
    retried, _ = timed_send(client, path.name)
    assert retried.status_code == 200, retried.get_json()
    assert orthanc_has(server, path)


def test_send_with_association_rejected(
    fault_client: FlaskClient, pacs: LocalOrthanc
) -> None:
    path = create_file(fault_client)
    content = path.read_bytes()

    response, elapsed = timed_send(fault_client, path.name, {"aet": "WRONGAET"})

    assert_pacs_error(response, elapsed, "Association Rejected")
    assert "Called AE Title Not Recognized" in response.get_json()["message"]
    assert_kept(fault_client, path, content)
    assert not orthanc_has(pacs, path)

    retried, _ = timed_send(fault_client, path.name, {"aet": pacs.settings.aet})
    assert retried.status_code == 200, retried.get_json()
    assert orthanc_has(pacs, path)


def test_send_with_store_refused(
    fault_app: Flask, fault_client: FlaskClient, pacs: LocalOrthanc
) -> None:
    dataset = pydicom.dcmread(create_file(fault_client))
    del dataset.StudyInstanceUID
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    path = Path(fault_app.config["DICOM_STORAGE_DIR"]) / "instance_4242.dcm"
    dataset.save_as(path)
    content = path.read_bytes()

    response, elapsed = timed_send(fault_client, path.name)

    assert_pacs_error(response, elapsed, "C-STORE status 0xA7")
    assert "DCMTK output" in response.get_json()["message"]
    assert_kept(fault_client, path, content)
    assert not orthanc_has(pacs, path)


def test_send_to_silent_peer(fault_client: FlaskClient, pacs: LocalOrthanc) -> None:
    path = create_file(fault_client)
    content = path.read_bytes()

    with silent_server() as port:
        response, elapsed = timed_send(
            fault_client, path.name, {"host": "127.0.0.1", "port": port}
        )

    assert_pacs_error(response, elapsed, "timeout")
    assert elapsed >= DCMTK_TIMEOUT - 0.5
    assert_kept(fault_client, path, content)

    retried, _ = timed_send(fault_client, path.name)
    assert retried.status_code == 200, retried.get_json()
    assert orthanc_has(pacs, path)


def test_send_to_slow_peer(fault_client: FlaskClient, pacs: LocalOrthanc) -> None:
    # Each reply of Orthanc arrives 2 s late. Every DCMTK phase stays under
    # its 3 s timeout, but the whole association takes longer than 3 s + 2 s.
    path = create_file(fault_client)
    content = path.read_bytes()
    proxy = SlowProxy(pacs.settings.dicom_port, delay=2.0)

    try:
        response, elapsed = timed_send(
            fault_client, path.name, {"host": "127.0.0.1", "port": proxy.port}
        )
    finally:
        proxy.close()

    assert_pacs_error(response, elapsed, "timed out")
    assert_kept(fault_client, path, content)


def test_delete_during_send(fault_client: FlaskClient, pacs: LocalOrthanc) -> None:
    path = create_file(fault_client)
    proxy = SlowProxy(pacs.settings.dicom_port, held=True)
    results: dict[str, Any] = {}

    def send() -> None:
        response, _ = timed_send(
            fault_client, path.name, {"host": "127.0.0.1", "port": proxy.port}
        )
        results["status"] = response.status_code
        results["body"] = response.get_json()

    sender = threading.Thread(target=send)
    try:
        sender.start()
        # storescu has read the file and opened the association. The proxy
        # holds back Orthanc's acceptance while the file is deleted.
        assert proxy.connected.wait(timeout=10)
        deleted = fault_client.delete(f"/api/dicom/instances/{path.name}")
        proxy.release()
        sender.join(timeout=DCMTK_TIMEOUT + MARGIN + 5)
    finally:
        proxy.close()

    assert deleted.status_code == 200
    assert not sender.is_alive()
    assert results["status"] == 404, results
    assert "deleted while it was being sent" in results["body"]["message"]
    assert results["body"]["success"] is False
    assert path.name in results["body"]["message"]
    assert fault_client.get("/api/dicom/instances").status_code == 200
    assert create_file(fault_client).is_file()


# --- Missing DCMTK ----------------------------------------------------------------


def test_missing_dcmtk_is_503(
    fault_client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = create_file(fault_client)
    monkeypatch.setenv("PATH", "/nonexistent")
    requests_by_tool = {
        "dump2dcm": ("POST", "/api/dicom/instances", CONTRACT_EXAMPLE),
        "dcmdump": ("GET", f"/api/dicom/instances/{path.name}/validate", None),
        "storescu": ("POST", f"/api/dicom/instances/{path.name}/send", None),
    }

    health = fault_client.get("/health")
    assert health.status_code == 503
    assert "dump2dcm" in health.get_json()["message"]

    for tool, (method, url, body) in requests_by_tool.items():
        response = fault_client.open(url, method=method, json=body)
        result = response.get_json()
        assert response.status_code == 503, (url, result)
        assert result["success"] is False
        assert repr(tool) in result["message"], result["message"]

    dump = fault_client.get(f"/api/dicom/instances/{path.name}/dump")
    assert dump.status_code == 503
    assert "'dcmdump'" in dump.get_json()["message"]
    assert [item.name for item in path.parent.iterdir()] == [path.name]
