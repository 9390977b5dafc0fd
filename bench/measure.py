"""The load generator and the statistics that every phase of the benchmark shares.

Every measured operation, an HTTP request or a bare DCMTK process, runs
through :func:`run_load`: a pool of threads that each take the next job
index until ``count`` jobs are done. The service and its anchors therefore
see the same generator at the same concurrency.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LoadResult:
    """Latencies of one batch of jobs and the wall time they took together."""

    latencies: list[float]
    wall_seconds: float

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        """Completed jobs per second of wall time."""
        return self.count / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def merged(self, other: LoadResult) -> LoadResult:
        return LoadResult(
            self.latencies + other.latencies, self.wall_seconds + other.wall_seconds
        )


def run_load(job: Callable[[int], None], count: int, concurrency: int) -> LoadResult:
    """Run ``job(index)`` for ``count`` indexes on ``concurrency`` threads.

    A job signals failure by raising, and the first failure is re-raised
    after the pool stops, because a benchmark of failing requests is
    meaningless.
    """
    next_index = iter(range(count))
    lock = threading.Lock()
    latencies: list[float] = []

    def worker() -> None:
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            started = time.perf_counter()
            job(index)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(worker) for _ in range(concurrency)]
        for future in futures:
            future.result()
    return LoadResult(latencies, time.perf_counter() - started)


def percentile(values: list[float], fraction: float) -> float:
    """Return the ``fraction`` quantile (0 to 1) by the nearest-rank method."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(result: LoadResult) -> dict[str, float]:
    """Return count, throughput (per second) and latencies in milliseconds."""
    return {
        "count": result.count,
        "throughput_per_s": round(result.throughput, 2),
        "p50_ms": round(percentile(result.latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(result.latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(result.latencies) * 1000, 2),
    }


def resident_kib(pid: int) -> int:
    """Return the resident set size (VmRSS) of process ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line.")


def child_pids(pid: int) -> list[int]:
    """Return the process IDs whose parent is ``pid`` (gunicorn's workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == pid:
                children.append(int(entry.name))
                break
    return sorted(children)


def load_average() -> tuple[float, float, float]:
    """Return the 1, 5 and 15 minute load averages from ``/proc/loadavg``."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)
