"""Load test: concurrent creates, validates and sends against gunicorn and Orthanc.

The script starts a local Orthanc and the service under gunicorn, both on
free ports of 127.0.0.1, with every file in its own working folder. Each
client thread repeats create, validate and send until the duration ends or
it reaches its request limit. Afterwards it checks that every stored file
reads completely, that no UID repeats, that the listing shows each created
file once, and that Orthanc contains every instance that was sent.

Run it from the repository root::

    /work/venv/bin/python bench/load.py --duration 60 --clients 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import requests

ROOT = Path(__file__).resolve().parent.parent
# The script runs as a file, so the checkout's own app package is put first.
sys.path.insert(0, str(ROOT))

from app.local_orthanc import LocalOrthanc, OrthancSettings, free_port  # noqa: E402

START_TIMEOUT = 60
PAGE_SIZE = 1000


@dataclass
class Sample:
    """One request: its kind, HTTP status (0 for a connection error) and latency."""

    kind: str
    status: int
    seconds: float


@dataclass
class Results:
    """Samples, created files and sent instances of all clients, under one lock."""

    samples: list[Sample] = field(default_factory=list)
    created: dict[str, dict[str, str]] = field(default_factory=dict)
    sent: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


EXPECTED_STATUS = {"create": 201, "validate": 200, "send": 200}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=60, help="seconds of load (default 60)"
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="concurrent client threads (default 16)"
    )
    parser.add_argument(
        "--workers", type=int, default=3, help="gunicorn worker processes (default 3)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=3000,
        help="maximum requests per client thread (default 3000)",
    )  # fmt: skip
    parser.add_argument(
        "--directory", type=Path, default=None,
        help="working folder (default bench/results/load-<UTC time>)",
    )  # fmt: skip
    return parser.parse_args(argv)


def start_orthanc(directory: Path) -> LocalOrthanc:
    settings = OrthancSettings(
        directory=directory / "orthanc",
        worklist_dir=directory / "worklists",
        http_port=free_port(),
        dicom_port=free_port(),
    )
    orthanc = LocalOrthanc(settings)
    orthanc.start()
    return orthanc


def start_gunicorn(
    directory: Path, orthanc: LocalOrthanc, workers: int, token: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the service under gunicorn and return the process and its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": str(workers),
        "DICOM_STORAGE_DIR": str(directory / "instances"),
        "WORKLIST_DIR": str(directory / "worklists"),
        "ORTHANC_HOST": "127.0.0.1",
        "ORTHANC_DICOM_PORT": str(orthanc.settings.dicom_port),
        "ORTHANC_AET": orthanc.settings.aet,
        "ORTHANC_URL": orthanc.settings.url,
        "API_TOKEN": token,
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")
    log = open(directory / "gunicorn.log", "ab")
    process = subprocess.Popen(
        [str(gunicorn), "-c", "gunicorn.conf.py", "app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()

    url = f"http://127.0.0.1:{port}"
    session = new_session(token)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited; see {directory / 'gunicorn.log'}")
        try:
            if session.get(url + "/", timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"gunicorn did not respond on {url} within {START_TIMEOUT} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def new_session(token: str) -> requests.Session:
    session = requests.Session()
    # Every request goes to 127.0.0.1, never through a configured proxy.
    session.trust_env = False
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def timed(
    session: requests.Session,
    results: Results,
    kind: str,
    method: str,
    url: str,
    **kwargs: Any,
) -> requests.Response | None:
    started = time.monotonic()
    try:
        response = session.request(method, url, timeout=60, **kwargs)
    except requests.RequestException as error:
        with results.lock:
            results.samples.append(Sample(kind, 0, time.monotonic() - started))
            results.errors.append(f"{kind}: {error}")
        return None

    elapsed = time.monotonic() - started
    with results.lock:
        results.samples.append(Sample(kind, response.status_code, elapsed))
        if response.status_code != EXPECTED_STATUS[kind]:
            results.errors.append(
                f"{kind}: HTTP {response.status_code} {response.text[:200]}"
            )
    return response


def run_client(
    index: int,
    url: str,
    token: str,
    deadline: float,
    max_requests: int,
    results: Results,
) -> None:
    """Repeat create, validate and send until ``deadline`` or ``max_requests``."""
    session = new_session(token)
    count = 0
    while time.monotonic() < deadline and count + 3 <= max_requests:
        body = {
            "patientID": f"LOAD-{index:02d}-{count:05d}",
            "patientName": f"Load^Client{index}",
            "modality": "CR",
            "studyDescription": "Load test",
        }
        created = timed(
            session, results, "create", "POST", f"{url}/api/dicom/instances", json=body
        )
        count += 1
        if created is None or created.status_code != 201:
            continue
        data = created.json()["data"]
        filename = data["filename"]
        with results.lock:
            results.created[filename] = data["uids"]

        timed(
            session,
            results,
            "validate",
            "GET",
            f"{url}/api/dicom/instances/{filename}/validate",
        )
        sent = timed(
            session,
            results,
            "send",
            "POST",
            f"{url}/api/dicom/instances/{filename}/send",
        )
        count += 2
        if sent is not None and sent.status_code == 200:
            with results.lock:
                results.sent[filename] = data["uids"]["sopInstanceUID"]
    session.close()


def listing(url: str, token: str) -> list[str]:
    session = new_session(token)
    names: list[str] = []
    offset = 0
    while True:
        response = session.get(
            f"{url}/api/dicom/instances",
            params={"limit": PAGE_SIZE, "offset": offset},
            timeout=60,
        )
        response.raise_for_status()
        files = response.json()["data"]["files"]
        names += [item["filename"] for item in files]
        if len(files) < PAGE_SIZE:
            return names
        offset += PAGE_SIZE


def check(
    directory: Path, url: str, token: str, orthanc: LocalOrthanc, results: Results
) -> dict[str, Any]:
    """Check files, UIDs, the listing and Orthanc, and return the findings."""
    storage = directory / "instances"
    unreadable = []
    for path in sorted(storage.glob("instance_*.dcm")):
        try:
            dataset = pydicom.dcmread(path)
            if len(dataset.PixelData) != dataset.Rows * dataset.Columns * 2:
                unreadable.append(f"{path.name}: short PixelData")
        except Exception as error:  # noqa: BLE001 - every failure is a finding
            unreadable.append(f"{path.name}: {error}")

    uids = [uid for item in results.created.values() for uid in item.values()]
    listed = listing(url, token)
    temporary = sorted(path.name for path in storage.glob(".tmp-*"))

    session = requests.Session()
    session.trust_env = False
    missing_in_orthanc = []
    for filename, uid in sorted(results.sent.items()):
        response = session.post(
            f"{orthanc.settings.url}/tools/lookup", data=uid, timeout=30
        )
        if response.status_code != 200 or not response.json():
            missing_in_orthanc.append(filename)

    return {
        "files_on_disk": len(list(storage.glob("instance_*.dcm"))),
        "files_unreadable": unreadable,
        "uids": len(uids),
        "uids_repeated": len(uids) - len(set(uids)),
        "listed": len(listed),
        "listed_twice": len(listed) - len(set(listed)),
        "created_not_listed": sorted(set(results.created) - set(listed)),
        "listed_not_created": sorted(set(listed) - set(results.created)),
        "temporary_files": temporary,
        "sent": len(results.sent),
        "sent_missing_in_orthanc": missing_in_orthanc,
    }


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summarize(results: Results, seconds: float) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for sample in results.samples:
        by_kind[sample.kind].append(sample.seconds)
        by_kind["all"].append(sample.seconds)

    latency = {
        kind: {
            "count": len(values),
            "p50_ms": round(percentile(values, 0.50) * 1000, 1),
            "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        }
        for kind, values in by_kind.items()
    }
    return {
        "seconds": round(seconds, 1),
        "requests": len(results.samples),
        "requests_per_second": round(len(results.samples) / seconds, 1),
        "errors": len(results.errors),
        "first_errors": results.errors[:10],
        "latency": latency,
    }


def passed(findings: dict[str, Any]) -> bool:
    return (
        not findings["files_unreadable"]
        and findings["uids_repeated"] == 0
        and findings["listed_twice"] == 0
        and not findings["created_not_listed"]
        and not findings["listed_not_created"]
        and not findings["temporary_files"]
        and not findings["sent_missing_in_orthanc"]
    )


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """Describe the machine. The load averages show what else ran on it."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
    }


def print_summary(report: dict[str, Any]) -> None:
    summary = report["summary"]
    print(
        f"\n{summary['requests']} requests in {summary['seconds']} s: "
        f"{summary['requests_per_second']} requests/s, {summary['errors']} errors"
    )
    for kind, figures in summary["latency"].items():
        print(
            f"  {kind:9} {figures['count']:6} requests  p50 {figures['p50_ms']:8.1f} ms"
            f"  p99 {figures['p99_ms']:8.1f} ms"
        )
    print("checks passed" if report["passed"] else "checks FAILED, see report.json")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    directory = (
        arguments.directory or ROOT / "bench" / "results" / f"load-{stamp}"
    ).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    load_before = os.getloadavg()

    orthanc = start_orthanc(directory)
    try:
        process, url = start_gunicorn(directory, orthanc, arguments.workers, token)
        try:
            results = Results()
            started = time.monotonic()
            deadline = started + arguments.duration
            threads = [
                threading.Thread(
                    target=run_client,
                    args=(index, url, token, deadline, arguments.max_requests, results),
                )
                for index in range(arguments.clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.monotonic() - started

            summary = summarize(results, seconds)
            findings = check(directory, url, token, orthanc, results)
        finally:
            stop(process)
    finally:
        orthanc.stop()

    report = {
        "started": stamp,
        "arguments": {
            "duration": arguments.duration,
            "clients": arguments.clients,
            "workers": arguments.workers,
            "max_requests": arguments.max_requests,
        },
        "machine": machine(load_before),
        "summary": summary,
        "checks": findings,
        "passed": passed(findings),
    }
    (directory / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print_summary(report)
    return 0 if report["passed"] and summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
