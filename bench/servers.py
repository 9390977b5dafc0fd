"""The servers that the benchmark starts: Orthanc and the service under gunicorn.

Both listen on free ports of 127.0.0.1 and keep every file in the
benchmark's own working folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from app.local_orthanc import LocalOrthanc, OrthancSettings, free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60


def start_orthanc(directory: Path) -> LocalOrthanc:
    """Start Orthanc on free loopback ports with its files in ``directory``."""
    settings = OrthancSettings(
        directory=directory,
        worklist_dir=directory / "worklists",
        http_port=free_port(),
        dicom_port=free_port(),
    )
    orthanc = LocalOrthanc(settings)
    orthanc.start()
    return orthanc


@dataclass
class Service:
    """The service running under gunicorn, and where it writes."""

    process: subprocess.Popen[bytes]
    url: str
    storage_dir: Path
    log_path: Path

    def stop(self) -> None:
        """Stop gunicorn gracefully and wait for it to exit."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_service(
    directory: Path,
    orthanc: LocalOrthanc,
    workers: int,
    threads: int,
) -> Service:
    """Start the service under gunicorn with ``gunicorn.conf.py`` and wait for it."""
    port = free_port()
    storage_dir = directory / "instances"
    environment = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_THREADS": str(threads),
        "DICOM_STORAGE_DIR": str(storage_dir),
        "WORKLIST_DIR": str(orthanc.settings.worklist_dir),
        "ORTHANC_HOST": "127.0.0.1",
        "ORTHANC_DICOM_PORT": str(orthanc.settings.dicom_port),
        "ORTHANC_AET": orthanc.settings.aet,
        "ORTHANC_URL": orthanc.settings.url,
        "DICOM_AET": "BENCHSCU",
        "API_TOKEN": "",
    }
    log_path = directory / "gunicorn.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn",
                "-c", str(ROOT / "gunicorn.conf.py"),
                "app:create_app()",
            ],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    service = Service(process, f"http://127.0.0.1:{port}", storage_dir, log_path)
    _wait_for_workers(service, workers)
    return service


def _wait_for_workers(service: Service, workers: int) -> None:
    """Wait until gunicorn responds and has forked all ``workers``."""
    from .measure import child_pids

    session = requests.Session()
    session.trust_env = False
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"gunicorn exited with status {service.process.returncode}; "
                f"see {service.log_path}."
            )
        try:
            answered = session.get(service.url + "/", timeout=2).ok
        except requests.RequestException:
            answered = False
        if answered and len(child_pids(service.process.pid)) >= workers:
            return
        time.sleep(0.2)

    service.stop()
    raise RuntimeError(
        f"The service did not respond on {service.url} within {START_TIMEOUT} s; "
        f"see {service.log_path}."
    )
