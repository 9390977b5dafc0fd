"""Benchmark the service against the bare DCMTK tools and Orthanc, in one run.

Run from the repository root with the project's virtual environment::

    /work/venv/bin/python bench/run.py          # full run, about 3 minutes
    /work/venv/bin/python bench/run.py --quick  # smoke run, about 1 minute

(times measured on a 2-core machine; any interpreter with the project
installed works). DCMTK and Orthanc come from the Debian packages that
``scripts/setup`` installs.

It starts Orthanc and the service under gunicorn on free ports of
127.0.0.1, with every file in a new temporary folder, and measures:

- create: ``POST /api/dicom/instances`` against bare ``dump2dcm`` on the
  same dump text (with DCMTK's default dictionary and with the service's
  template dictionary) and against Orthanc's ``POST /tools/create-dicom``
  with the same tags;
- validate: ``GET /instances/{f}/validate`` against bare ``dcmdump``, at
  the common concurrency and with one request at a time. When DICOM
  standard data is configured, also against ``dcmdump`` plus a new
  ``dicom-validator`` process per file;
- send: the batch send route with 100 files against one bare ``storescu``
  run with 100 other files;
- list: one page of 100 with all instances stored;
- the resident memory of each worker after warm-up and after 1,000 and
  10,000 creates.

Each figure is printed with its ratio to its anchor and written to
``bench/results/<UTC time>.json``. Service and anchors alternate in rounds,
so that load from other processes spreads over both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests

from app.builder import IMAGE_TEMPLATE, InstanceBuilder
from app.config import load_config
from app.dcmtk import DUMP_LINE_LIMIT
from app.dump import DumpRenderer
from app.modalities import load_table
from app.schemas import InstanceSchema
from app.storage import FileStore
from app.template_dictionary import build as build_template_dictionary
from bench.measure import (
    LoadResult,
    child_pids,
    load_average,
    resident_kib,
    run_load,
    summary,
)
from bench.servers import Service, start_orthanc, start_service

RESULTS_DIR = ROOT / "bench" / "results"

# The body of every create request; Orthanc gets the same values as tags.
CREATE_BODY = {
    "patientID": "BENCH-0001",
    "patientName": "Bench^Patient",
    "patientBirthDate": "19800517",
    "patientSex": "F",
    "studyDescription": "Benchmark study",
    "seriesDescription": "Benchmark series",
    "modality": "CR",
    "accessionNumber": "ACC0001",
    "institutionName": "Benchmark Hospital",
    "referringPhysicianName": "Smith^John",
    "performingPhysicianName": "Jones^Mary",
}
ORTHANC_TAGS = {
    "PatientID": "BENCH-0001",
    "PatientName": "Bench^Patient",
    "PatientBirthDate": "19800517",
    "PatientSex": "F",
    "StudyDescription": "Benchmark study",
    "SeriesDescription": "Benchmark series",
    "Modality": "CR",
    "AccessionNumber": "ACC0001",
    "InstitutionName": "Benchmark Hospital",
    "ReferringPhysicianName": "Smith^John",
    "PerformingPhysicianName": "Jones^Mary",
    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1",
}

# Targets of the feature request, as (figure, comparison, bound).
TARGETS = {
    "create_throughput_vs_dump2dcm": (">=", 0.9),
    "create_throughput_vs_orthanc": (">=", 1 / 3),
    "create_p50_vs_dump2dcm": ("<=", 1.5),
    "send_100_vs_storescu": ("<=", 1.2),
    "validate_p50_vs_dcmdump": ("<", 2.0),
    "list_p50_ms": ("<", 50.0),
    "worker_rss_growth_1000_to_10000": ("<=", 1.10),
}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: 1,500 instances, rounds of 30 requests",
    )  # fmt: skip
    parser.add_argument(
        "--concurrency", type=int, default=4,
        help="threads of the load generator, for the service and every anchor",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument(
        "--threads", type=int, default=4, help="gunicorn threads per worker"
    )
    parser.add_argument(
        "--instances", type=int, default=10_000,
        help="instances stored before the list and the memory figures",
    )  # fmt: skip
    parser.add_argument(
        "--round-size", type=int, default=200,
        help="requests per round of the create and validate comparisons",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="rounds of each comparison; service and anchor alternate",
    )  # fmt: skip
    parser.add_argument(
        "--send-count", type=int, default=100, help="files per batch send"
    )
    parser.add_argument(
        "--output", type=Path, default=None,
        help="results file (default bench/results/<UTC time>.json)",
    )  # fmt: skip
    parser.add_argument(
        "--keep", action="store_true",
        help="keep the temporary folder with the instances and the logs",
    )  # fmt: skip
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.instances = 1_500
        arguments.round_size = 30
        arguments.rounds = 2
    return arguments


class Bench:
    """One benchmark run: the servers, the working folder and the figures."""

    def __init__(self, arguments: argparse.Namespace, workdir: Path) -> None:
        self.arguments = arguments
        self.workdir = workdir
        self.concurrency = arguments.concurrency
        self.results: dict[str, Any] = {}
        self.ratios: dict[str, float] = {}
        self.local = threading.local()
        self.created = 0
        # The folder that the service loads too: DICOM_STANDARD_DIR or the bundled one.
        self.standard_dir = load_config()["DICOM_STANDARD_DIR"]
        self.orthanc = start_orthanc(workdir / "orthanc")
        self.service: Service = start_service(
            workdir, self.orthanc, arguments.workers, arguments.threads
        )
        self.dump_path = self.write_anchor_dump()
        dictionary = build_template_dictionary()
        self.small_dictionary = (
            {**os.environ, "DCMDICTPATH": str(dictionary)} if dictionary else None
        )

    def stop(self) -> None:
        self.service.stop()
        self.orthanc.stop()

    def session(self) -> requests.Session:
        """Return this thread's HTTP session, which keeps its connection open."""
        session = getattr(self.local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False
            self.local.session = session
        return session

    def write_anchor_dump(self) -> Path:
        """Render the dump text that the service writes for ``CREATE_BODY``."""
        body = InstanceSchema().load(CREATE_BODY)
        modality = load_table().lookup(body["modality"])
        store = FileStore(self.workdir / "unused", r"instance_[0-9]+\.dcm", "instance")
        builder = InstanceBuilder(store, DumpRenderer(), "", 10)
        dataset = builder.dataset(body, modality)
        dump, _charset = builder.renderer.render(
            IMAGE_TEMPLATE, {"ds": dataset, "iod_template": modality.iod_template}
        )
        path = self.workdir / "anchor.dump"
        path.write_bytes(dump)
        (self.workdir / "anchor-out").mkdir()
        return path

    # Single operations, each one job of the load generator.

    def create_request(self, index: int) -> None:
        response = self.session().post(
            self.service.url + "/api/dicom/instances", json=CREATE_BODY, timeout=60
        )
        _expect(response, 201)

    def dump2dcm_process(self, index: int, environment: dict[str, str] | None) -> None:
        output = self.workdir / "anchor-out" / f"{index % 1000}.dcm"
        command = [
            "dump2dcm", "--line", str(DUMP_LINE_LIMIT), "--write-xfer-little",
            "--stop-on-error", str(self.dump_path), str(output),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, env=environment)

    def check_dictionaries(self) -> None:
        """Check that dump2dcm writes the same bytes with either dictionary."""
        if self.small_dictionary is None:
            self.results["template_dictionary"] = {"used": False}
            return
        self.dump2dcm_process(0, None)
        full = (self.workdir / "anchor-out" / "0.dcm").read_bytes()
        self.dump2dcm_process(0, self.small_dictionary)
        small = (self.workdir / "anchor-out" / "0.dcm").read_bytes()
        self.results["template_dictionary"] = {
            "used": True,
            "path": self.small_dictionary["DCMDICTPATH"],
            "identical_output": full == small,
        }
        if full != small:
            raise RuntimeError(
                "dump2dcm wrote different files with the template dictionary "
                "and with DCMTK's full dictionary."
            )

    def orthanc_create(self, index: int) -> None:
        response = self.session().post(
            self.orthanc.settings.url + "/tools/create-dicom",
            json={"Tags": ORTHANC_TAGS},
            timeout=60,
        )
        _expect(response, 200)

    def validate_request(self, filename: str) -> None:
        response = self.session().get(
            f"{self.service.url}/api/dicom/instances/{filename}/validate", timeout=60
        )
        _expect(response, 200)

    def dcmdump_process(self, filename: str) -> None:
        # The arguments of app.dcmtk.dcmdump, so both print the same dump.
        path = self.service.storage_dir / filename
        command = ["dcmdump", "--convert-to-utf8", "--print-all", "--no-uid-names"]
        subprocess.run([*command, str(path)], check=True, capture_output=True)

    def dcmdump_and_validator(self, filename: str) -> None:
        self.dcmdump_process(filename)
        script = ROOT / "bench" / "validate_once.py"
        path = self.service.storage_dir / filename
        subprocess.run(
            [sys.executable, str(script), self.standard_dir, str(path)],
            check=True,
            capture_output=True,
        )

    def list_request(self, index: int) -> None:
        response = self.session().get(
            self.service.url + "/api/dicom/instances",
            params={"limit": 100, "offset": 0},
            timeout=60,
        )
        _expect(response, 200)
        if len(response.json()["data"]["files"]) != 100:
            raise RuntimeError("The listing returned fewer than 100 files.")

    # Phases.

    def creates(self, count: int) -> LoadResult:
        result = run_load(self.create_request, count, self.concurrency)
        self.created += count
        return result

    def worker_memory(self) -> dict[str, int]:
        pids = child_pids(self.service.process.pid)
        return {str(pid): resident_kib(pid) for pid in pids}

    def phase_create(self) -> None:
        """Compare creates with bare dump2dcm and with Orthanc, in rounds."""
        arguments = self.arguments
        self.creates(50)
        run_load(lambda index: self.dump2dcm_process(index, None), 20, self.concurrency)
        run_load(self.orthanc_create, 20, self.concurrency)
        self.results["memory_after_warmup_kib"] = self.worker_memory()

        self.check_dictionaries()
        service = dump2dcm = small = orthanc = LoadResult([], 0.0)
        for _ in range(arguments.rounds):
            service = service.merged(self.creates(arguments.round_size))
            dump2dcm = dump2dcm.merged(
                run_load(
                    lambda index: self.dump2dcm_process(index, None),
                    arguments.round_size,
                    self.concurrency,
                )
            )
            if self.small_dictionary is not None:
                small = small.merged(
                    run_load(
                        lambda index: self.dump2dcm_process(
                            index, self.small_dictionary
                        ),
                        arguments.round_size,
                        self.concurrency,
                    )
                )
            orthanc = orthanc.merged(
                run_load(self.orthanc_create, arguments.round_size, self.concurrency)
            )

        self.results["create"] = {
            "service": summary(service),
            "dump2dcm": summary(dump2dcm),
            "orthanc_create_dicom": summary(orthanc),
        }
        if small.count:
            self.results["create"]["dump2dcm_template_dictionary"] = summary(small)
            self.ratios["create_throughput_vs_dump2dcm_template_dictionary"] = (
                service.throughput / small.throughput
            )
        self.ratios["create_throughput_vs_dump2dcm"] = (
            service.throughput / dump2dcm.throughput
        )
        self.ratios["create_throughput_vs_orthanc"] = (
            service.throughput / orthanc.throughput
        )
        self.ratios["create_p50_vs_dump2dcm"] = (
            self.results["create"]["service"]["p50_ms"]
            / self.results["create"]["dump2dcm"]["p50_ms"]
        )

    def phase_fill(self) -> None:
        """Create instances up to 1,000 and then up to ``--instances``, noting memory."""
        checkpoints = sorted(
            {min(1_000, self.arguments.instances), self.arguments.instances}
        )
        fill = LoadResult([], 0.0)
        for checkpoint in checkpoints:
            missing = checkpoint - self.created
            if missing > 0:
                fill = fill.merged(self.creates(missing))
            self.results[f"memory_after_{checkpoint}_creates_kib"] = (
                self.worker_memory()
            )

        self.results["fill_creates"] = summary(fill)
        first = self.results[f"memory_after_{checkpoints[0]}_creates_kib"]
        last = self.results[f"memory_after_{checkpoints[-1]}_creates_kib"]
        if first.keys() != last.keys():
            raise RuntimeError("A gunicorn worker was replaced during the fill.")
        self.ratios["worker_rss_growth_1000_to_10000"] = max(
            last[pid] / first[pid] for pid in first
        )

    def phase_list(self) -> None:
        count = 50 if self.arguments.quick else 200
        result = run_load(self.list_request, count, self.concurrency)
        self.results["list_page_of_100"] = {
            "stored_instances": self.stored_count(),
            **summary(result),
        }
        self.ratios["list_p50_ms"] = self.results["list_page_of_100"]["p50_ms"]

    def phase_validate(self, filenames: list[str]) -> None:
        """Compare the validate route with bare dcmdump on the same files."""
        count = self.arguments.round_size
        files = filenames[:count]
        self.validate_round(self.validate_request, files[:20])
        service = dcmdump = LoadResult([], 0.0)
        for _ in range(self.arguments.rounds):
            service = service.merged(self.validate_round(self.validate_request, files))
            dcmdump = dcmdump.merged(self.validate_round(self.dcmdump_process, files))

        # The same comparison with one request at a time, which shows the
        # latency of an idle service rather than of two saturated cores.
        single_service = single_dcmdump = LoadResult([], 0.0)
        single = files[: max(10, count // 4)]
        for _ in range(self.arguments.rounds):
            single_service = single_service.merged(
                run_load(
                    lambda index: self.validate_request(single[index]), len(single), 1
                )
            )
            single_dcmdump = single_dcmdump.merged(
                run_load(
                    lambda index: self.dcmdump_process(single[index]), len(single), 1
                )
            )

        self.results["validate"] = {
            "iod_check": self.iod_state(files[0]),
            "service": summary(service),
            "dcmdump": summary(dcmdump),
            "service_concurrency_1": summary(single_service),
            "dcmdump_concurrency_1": summary(single_dcmdump),
        }
        self.ratios["validate_p50_vs_dcmdump_concurrency_1"] = (
            self.results["validate"]["service_concurrency_1"]["p50_ms"]
            / self.results["validate"]["dcmdump_concurrency_1"]["p50_ms"]
        )
        if self.standard_dir:
            both = self.validate_round(self.dcmdump_and_validator, files[:50])
            self.results["validate"]["dcmdump_and_validator_process"] = summary(both)
        self.ratios["validate_p50_vs_dcmdump"] = (
            self.results["validate"]["service"]["p50_ms"]
            / self.results["validate"]["dcmdump"]["p50_ms"]
        )

    def validate_round(self, job: Any, files: list[str]) -> LoadResult:
        return run_load(lambda index: job(files[index]), len(files), self.concurrency)

    def iod_state(self, filename: str) -> dict[str, Any]:
        response = self.session().get(
            f"{self.service.url}/api/dicom/instances/{filename}/validate", timeout=60
        )
        iod = response.json()["data"]["iod"]
        return {"ran": iod["ran"], "reason": iod["reason"], "edition": iod["edition"]}

    def phase_send(self, filenames: list[str]) -> None:
        """Compare the batch send route with one bare storescu run, on new files."""
        size = self.arguments.send_count
        service: list[float] = []
        bare: list[float] = []
        for round_number in range(self.arguments.rounds):
            start = 2 * round_number * size
            service_files = filenames[start : start + size]
            bare_files = filenames[start + size : start + 2 * size]
            if len(bare_files) < size:
                raise RuntimeError("Not enough unsent instances for the send rounds.")
            try:
                service_seconds = self.timed(self.batch_send, service_files)
                bare_seconds = self.timed(self.storescu_process, bare_files)
            except (RuntimeError, subprocess.CalledProcessError) as error:
                # A failed send has no meaningful time, so the round is
                # recorded as failed and later rounds are skipped.
                failure = f"Send round {round_number + 1} failed: {error}"
                print(failure, file=sys.stderr)
                self.results["send_failure"] = failure
                self.results["orthanc_exit_status"] = self.orthanc_exit_status()
                break
            service.append(service_seconds)
            bare.append(bare_seconds)

        self.results["send"] = {
            "files_per_send": size,
            "service_seconds": [round(value, 3) for value in service],
            "storescu_seconds": [round(value, 3) for value in bare],
        }
        if service:
            self.ratios["send_100_vs_storescu"] = (
                sorted(service)[len(service) // 2] / sorted(bare)[len(bare) // 2]
            )

    def orthanc_exit_status(self) -> int | None:
        """Return Orthanc's exit status, or ``None`` while it still runs."""
        process = self.orthanc.process
        return None if process is None else process.poll()

    def batch_send(self, filenames: list[str]) -> None:
        response = self.session().post(
            self.service.url + "/api/dicom/instances/send",
            json={"filenames": filenames},
            timeout=300,
        )
        _expect(response, 200)

    def storescu_process(self, filenames: list[str]) -> None:
        settings = self.orthanc.settings
        command = [
            "storescu", "--aetitle", "BENCHSCU", "--call", settings.aet,
            "127.0.0.1", str(settings.dicom_port),
            *[str(self.service.storage_dir / name) for name in filenames],
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)

    @staticmethod
    def timed(action: Any, filenames: list[str]) -> float:
        started = time.perf_counter()
        action(filenames)
        return time.perf_counter() - started

    def stored_count(self) -> int:
        response = self.session().get(
            self.service.url + "/api/dicom/instances", params={"limit": 1}, timeout=60
        )
        return int(response.json()["data"]["count"])

    def stored_filenames(self) -> list[str]:
        response = self.session().get(
            self.service.url + "/api/dicom/instances",
            params={"limit": 1000},
            timeout=60,
        )
        return [item["filename"] for item in response.json()["data"]["files"]]


def _expect(response: requests.Response, status: int) -> None:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.url} returned "
            f"{response.status_code}, expected {status}: {response.text[:300]}"
        )


def machine() -> dict[str, Any]:
    """Describe the CPU, memory and tool versions behind the figures."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    dcmtk = subprocess.run(
        ["dump2dcm", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    orthanc = subprocess.run(
        ["Orthanc", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "dcmtk": dcmtk.strip("$ "),
        "orthanc": orthanc,
    }


def report(results: dict[str, Any], ratios: dict[str, float]) -> None:
    """Print every figure and each target with its measured ratio."""
    print(json.dumps(results, indent=2))
    print()
    print(f"{'target':40} {'measured':>10} {'bound':>10}  met")
    for name, (comparison, bound) in TARGETS.items():
        if name not in ratios:
            print(f"{name:40} {'not run':>10}")
            continue
        value = ratios[name]
        met = _met(value, comparison, bound)
        print(
            f"{name:40} {value:10.3f} {comparison:>2}{bound:8.3f}  {'yes' if met else 'NO'}"
        )
    for name, value in ratios.items():
        if name not in TARGETS:
            print(f"{name:40} {value:10.3f}  (no target)")


def _met(value: float, comparison: str, bound: float) -> bool:
    if comparison == ">=":
        return value >= bound
    if comparison == "<=":
        return value <= bound
    return value < bound


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dicom-bench-"))
    started = datetime.now(UTC)
    load_before = load_average()
    bench = Bench(arguments, workdir)
    try:
        bench.phase_create()
        bench.phase_fill()
        bench.phase_list()
        filenames = bench.stored_filenames()
        bench.phase_validate(filenames)
        bench.phase_send(filenames)
    finally:
        bench.stop()
        if not arguments.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    results = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "settings": {
            "concurrency": arguments.concurrency,
            "workers": arguments.workers,
            "threads": arguments.threads,
            "instances": arguments.instances,
            "round_size": arguments.round_size,
            "rounds": arguments.rounds,
            "quick": arguments.quick,
        },
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        **bench.results,
        "ratios": {name: round(value, 3) for name, value in bench.ratios.items()},
        "targets_met": {
            name: _met(bench.ratios[name], *TARGETS[name])
            for name in TARGETS
            if name in bench.ratios
        },
    }
    report(results, bench.ratios)

    output = arguments.output or RESULTS_DIR / f"{started:%Y%m%dT%H%M%SZ}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nWrote {output}")
    if arguments.keep:
        print(f"Kept {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
