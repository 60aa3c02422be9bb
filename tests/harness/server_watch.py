"""Watch a server's process tree during a transfer (memory, any large file it writes); prime it.

Memory is sampled as the sum over the whole tree (root and all descendants) of USS and RSS.
Files are caught two ways, because a temp file may be unlinked right after it is opened
(`tempfile.TemporaryFile`, O_TMPFILE) and so never show in a directory listing:
  - every regular file any process of the tree has open (/proc/<pid>/fd), wherever it is;
  - every file under the watched directories (the state dir, its TMPDIR).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
import psutil


@dataclass
class Sample:
    uss: int
    rss: int
    processes: int
    uss_by_pid: dict[int, int] = field(default_factory=dict)


@dataclass
class FileSeen:
    size: int = 0
    path: str = ""

    def update(self, size: int, path: str) -> None:
        if size > self.size:
            self.size, self.path = size, path


@dataclass
class WatchReport:
    baseline: Sample
    peak_uss: int = 0
    peak_rss: int = 0
    peak_uss_by_pid: dict[int, int] = field(default_factory=dict)
    samples: int = 0
    largest_open_file: FileSeen = field(default_factory=FileSeen)
    largest_dir_file: FileSeen = field(default_factory=FileSeen)
    baseline_dir_total: int = 0
    peak_dir_total: int = 0

    @property
    def uss_growth(self) -> int:
        return max(0, self.peak_uss - self.baseline.uss)

    @property
    def rss_growth(self) -> int:
        return max(0, self.peak_rss - self.baseline.rss)

    def growth_by_pid(self) -> dict[int, int]:
        """Peak USS growth of each process (those that existed at the baseline)."""
        return {pid: self.peak_uss_by_pid.get(pid, uss) - uss
                for pid, uss in self.baseline.uss_by_pid.items()}

    @property
    def dir_growth(self) -> int:
        return max(0, self.peak_dir_total - self.baseline_dir_total)


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def sample_memory(pid: int) -> Sample:
    sample = Sample(uss=0, rss=0, processes=0)
    for proc in tree(pid):
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        sample.uss += info.uss
        sample.rss += info.rss
        sample.processes += 1
        sample.uss_by_pid[proc.pid] = info.uss
    return sample


def _scan_open_files(pid: int, seen: FileSeen, ignore: set[str]) -> None:
    for proc in tree(pid):
        fd_dir = f"/proc/{proc.pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
                if stat.S_ISREG(st.st_mode):
                    target = os.readlink(f"{fd_dir}/{fd}")
                    if target not in ignore:
                        seen.update(st.st_size, target)
            except OSError:
                continue


def _scan_dirs(dirs: list[Path], seen: FileSeen, ignore: set[str]) -> int:
    """Total size of the files under dirs (ignored ones left out); the largest goes to seen."""
    total = 0
    for top in dirs:
        for root, _, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                if path in ignore:
                    continue
                try:
                    size = os.lstat(path).st_size
                except OSError:
                    continue
                total += size
                seen.update(size, path)
    return total


class ServerWatch:
    """Context manager: baseline on enter, samples every `interval` s until exit."""

    def __init__(self, pid: int, dirs: list[Path], interval: float = 0.25,
                 ignore_files: set[Path] | None = None) -> None:
        self.pid = pid
        self.dirs = dirs
        self.interval = interval
        # Files expected to be open and to grow by themselves (the server log): not a copy.
        self.ignore = {str(p) for p in ignore_files or set()}
        self.report = WatchReport(baseline=Sample(0, 0, 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server-watch", daemon=True)

    def _tick(self) -> None:
        s = sample_memory(self.pid)
        r = self.report
        r.peak_uss, r.peak_rss = max(r.peak_uss, s.uss), max(r.peak_rss, s.rss)
        for pid, uss in s.uss_by_pid.items():
            r.peak_uss_by_pid[pid] = max(r.peak_uss_by_pid.get(pid, 0), uss)
        r.samples += 1
        _scan_open_files(self.pid, r.largest_open_file, self.ignore)
        r.peak_dir_total = max(r.peak_dir_total,
                               _scan_dirs(self.dirs, r.largest_dir_file, self.ignore))

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._tick()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> ServerWatch:
        self.report = WatchReport(baseline=sample_memory(self.pid))
        self.report.baseline_dir_total = _scan_dirs(self.dirs, FileSeen(), self.ignore)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._tick()


# --- first use ------------------------------------------------------------------------------
# Each worker pays a one-time cost on its first tracking and artifact requests (SQLAlchemy
# models, boto3 and an S3 client: ~20-45 MiB USS). That cost does not depend on any file's size,
# so transfers are measured from a baseline taken after every worker has paid it.

def workers(pid: int) -> list[psutil.Process]:
    """The server's request workers: the children gunicorn forks (server/gunicorn_conf.py)."""
    try:
        return list(psutil.Process(pid).children())
    except psutil.Error:
        return []


def _uss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_full_info().uss)
    except psutil.Error:
        return 0


def _prime_once(url: str, headers: dict[str, str] | None = None) -> None:
    """The requests a large upload and download make, on a fresh connection (so any worker):
    presigned and through the server."""
    with httpx.Client(base_url=url, timeout=30.0, headers=headers) as c:
        c.get("/api/3.0/mlflow/server-info").raise_for_status()
        c.get("/api/2.0/mlflow/experiments/search", params={"max_results": 1}).raise_for_status()
        run = c.post("/api/2.0/mlflow/runs/create", json={"experiment_id": "0"})
        run.raise_for_status()
        run_id = run.json()["run"]["info"]["run_id"]
        c.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id}).raise_for_status()
        where = f"0/{run_id}/artifacts"
        mpu = c.post(f"/api/2.0/mlflow-artifacts/mpu/create/{where}",
                     json={"path": "prime.bin", "num_parts": 1})
        mpu.raise_for_status()
        c.post(f"/api/2.0/mlflow-artifacts/mpu/abort/{where}",
               json={"path": "prime.bin", "upload_id": mpu.json()["upload_id"]}).raise_for_status()
        c.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": where}).raise_for_status()
        c.get(f"/api/2.0/mlflow-artifacts/presigned/{where}/absent.bin")  # 404 is fine
        through = f"/api/2.0/mlflow-artifacts/artifacts/{where}/prime-through.bin"
        # Over one S3 part (5 MiB): the multipart path of a streamed upload is primed too.
        c.put(through, content=b"p" * (5 * 2**20 + 65536)).raise_for_status()
        c.get(through).raise_for_status()
        c.post("/api/2.0/mlflow/runs/delete", json={"run_id": run_id}).raise_for_status()


def prime_workers(url: str, pid: int, min_growth: int = 8 * 2**20,
                  timeout: float = 120.0, headers: dict[str, str] | None = None
                  ) -> dict[int, int]:
    """Send the requests of a transfer, concurrently on fresh connections, until every worker
    has grown by min_growth (i.e. served them at least once). Returns growth per worker pid."""
    procs = workers(pid)
    if not procs:
        raise RuntimeError(f"no worker processes found under pid {pid}")
    start = {p.pid: _uss(p) for p in procs}
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(2 * len(procs)) as pool:
        while True:
            for future in [pool.submit(_prime_once, url, headers)
                           for _ in range(2 * len(procs))]:
                future.result()
            grown = {p.pid: _uss(p) - start[p.pid] for p in procs}
            if all(g >= min_growth for g in grown.values()):
                return grown
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not all primed within {timeout:.0f} s: {grown}")
