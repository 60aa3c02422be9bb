#!/usr/bin/env python
"""Large-artifact throughput through the platform, relative to boto3 straight to the same S3.

Brings up the platform (`mlflow_stack.local.platform.up`) on a real PostgreSQL and a real S3
server (JuiceFS gateway) from the test harness, then moves one file of --size-mib up and down:

  platform  MLflow client in its own process with MLFLOW_TRACKING_URI only (no AWS_* variables,
            empty HOME): `mlflow.log_artifact` / `mlflow.artifacts.download_artifacts`;
  direct    boto3 `upload_file` / `download_file` (default TransferConfig) with the S3 keys,
            also in its own process.

--client picks the MLflow client side, one or several (measured alternately in the same run):
`stack` (default) uses mlflow_stack.client.artifacts' repository (what users get with this
package installed), `env` MLflow's own repository with ARTIFACT_TRANSFER_ENV (plain MLflow with
the recommended settings), `mlflow` MLflow's own at its defaults.

Platform and direct runs alternate (order rotated every round) and only the transfer call is
timed (and its CPU time, in the client process and in the S3 gateway). Each round prints its
own platform/direct ratios and the machine's load average; `stack` downloads also report their
per-range timings (time to response headers, time streaming the body). Before the first one,
every server worker is sent the requests a transfer makes, so each has paid its one-time
first-use cost (boto3, S3 client, ORM); that cost is printed, and each transfer's growth is
measured over the primed baseline. Prints throughput of each, the ratios platform/direct, the
growth of the server process tree's memory (sum of USS, and of RSS, over all its processes) and
the largest file the server had open or had in its state dir during the platform transfers.
Ends with one PASS/FAIL line per goal (issue 15 §3): every round's ratio >= 0.90 for each
direction and client, server memory growth < 64 MiB, no temporary copy (no server file of
16 MiB or more, open or in its state dir, which holds its TMPDIR). Exit status 0 either way:
the figures are the product, not a test.

    .venv/bin/python bench/artifact_io.py [--size-mib 1024] [--rounds 2] \
        [--client stack|env|mlflow[,...]]

With `--client mlflow` and a file under MLflow's 500 MiB multipart threshold (`--size-mib
256`), both directions pass through the server itself (streamed to and from S3: what the
memory and no-copy goals then measure); from 500 MiB they use the presigned URLs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the harness package, as the test suite imports it

import psutil  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from harness.artifact_client import client_env, run_transfer  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.postgres import PostgresServer, start_postgres  # noqa: E402
from harness.s3 import S3Server, start_s3  # noqa: E402
from harness.server_watch import (  # noqa: E402
    ServerWatch,
    WatchReport,
    prime_workers,
    sample_memory,
)
from mlflow_stack.client.artifacts import ARTIFACT_TRANSFER_ENV  # noqa: E402
from mlflow_stack.config.model import Settings  # noqa: E402
from mlflow_stack.config.secrets import Secrets  # noqa: E402
from mlflow_stack.local import platform  # noqa: E402
from mlflow_stack.local.state import StateDir  # noqa: E402
from mlflow_stack.progress import NullProgress  # noqa: E402

MIB = 2**20
BUCKET = "mlflow-bench"
# The goals (issue 15 §3).
RATIO_GOAL = 0.90
MEMORY_LIMIT = 64 * MIB
# A server file this large would be (part of) a copy; its own files stay far below it
# (same bound as tests/local/test_large_artifacts.py).
FILE_LIMIT = 16 * MIB
DIRECT_BUCKET = "direct-bench"


@dataclass
class Totals:
    """Accumulated transfers of one kind (e.g. platform uploads)."""

    seconds: float = 0.0
    nbytes: int = 0
    client_cpu: float = 0.0
    gateway_cpu: float = 0.0
    runs: list[float] = field(default_factory=list)  # MiB/s of each transfer
    # CPU s/GiB of each transfer: client process + S3 gateway (what competes for the 2 cores).
    run_cpu: list[float] = field(default_factory=list)

    def add(self, nbytes: int, seconds: float, client_cpu: float, gateway_cpu: float) -> None:
        self.seconds += seconds
        self.nbytes += nbytes
        self.client_cpu += client_cpu
        self.gateway_cpu += gateway_cpu
        self.runs.append(nbytes / seconds / MIB)
        self.run_cpu.append((client_cpu + gateway_cpu) / (nbytes / 2**30))

    @property
    def mib_s(self) -> float:
        return self.nbytes / self.seconds / MIB if self.seconds else 0.0

    def cpu_per_gib(self, cpu: float) -> float:
        return cpu / (self.nbytes / 2**30) if self.nbytes else 0.0


# --- direct boto3 worker (runs in a child process, like the MLflow client) -----------------

def _direct_worker(op: str, endpoint: str, bucket: str, key: str, path: str) -> int:
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    started, cpu = time.perf_counter(), time.process_time()
    if op == "upload":
        s3.upload_file(path, bucket, key)
    else:
        s3.download_file(bucket, key, path)
    print(json.dumps({"seconds": time.perf_counter() - started,
                      "cpu_seconds": time.process_time() - cpu}))
    return 0


def direct_transfer(s3: S3Server, op: str, key: str, path: Path) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) of one boto3 transfer in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key)
    proc = subprocess.run(
        [sys.executable, __file__, "--direct-worker", op, s3.endpoint_url, DIRECT_BUCKET, key,
         str(path)], env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"direct {op} failed:\n{proc.stderr[-4000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return float(data["seconds"]), float(data["cpu_seconds"])


# --- set-up ---------------------------------------------------------------------------------

def make_file(path: Path, size: int) -> str:
    """Random bytes (incompressible), written in 16 MiB pieces; returns the sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            piece = os.urandom(min(16 * MIB, left))
            digest.update(piece)
            f.write(piece)
            left -= len(piece)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(16 * MIB):
            digest.update(piece)
    return digest.hexdigest()


def platform_settings(pg: PostgresServer, s3: S3Server) -> Settings:
    settings = Settings.model_validate({
        "server": {"port": free_port()},
        "database": {"backend": "postgresql", "host": pg.host, "port": pg.port,
                     "user": pg.superuser, "name": "mlflow_bench", "sslmode": "disable"},
        "artifacts": {"backend": "s3", "bucket": BUCKET, "endpoint_url": s3.endpoint_url},
    })
    return settings.model_copy(update={"secrets": Secrets.model_construct(
        admin_password=SecretStr(pg.password),
        s3_access_key_id=SecretStr(s3.access_key),
        s3_secret_access_key=SecretStr(s3.secret_key),
    )})


@contextlib.contextmanager
def services(base: Path) -> Iterator[tuple[PostgresServer, S3Server]]:
    pg = start_postgres(base / "postgres")
    try:
        s3 = start_s3(base / "s3")
        try:
            yield pg, s3
        finally:
            s3.stop()
    finally:
        pg.stop()


def parse_env(pairs: list[str]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def fmt_mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def print_watch(label: str, w: WatchReport) -> None:
    print(f"  {label}: USS +{fmt_mib(w.uss_growth)} (base {fmt_mib(w.baseline.uss)}, "
          f"{w.baseline.processes} procs), RSS +{fmt_mib(w.rss_growth)}; largest file open "
          f"{fmt_mib(w.largest_open_file.size)}, in state dir {fmt_mib(w.largest_dir_file.size)}"
          f" (dir growth {fmt_mib(w.dir_growth)}); {w.samples} samples")
    if w.uss_growth > 8 * MIB:
        print("    by process: " + ", ".join(
            f"{pid} +{fmt_mib(g)}" for pid, g in w.growth_by_pid().items()))


def range_summary(ranges: list[dict[str, float]]) -> str:
    """One line on a streamed download's ranges: where each one's time went."""
    def q(values: list[float], frac: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(frac * len(ordered)))]

    heads = [r["headers_s"] for r in ranges]
    bodies = [r["body_s"] for r in ranges]
    rates = [r["bytes"] / MIB / r["body_s"] for r in ranges if r["body_s"] > 0]
    last_start = max(r["started"] for r in ranges)
    return (f"{len(ranges)} ranges of {fmt_mib(int(max(r['bytes'] for r in ranges)))}: headers "
            f"p50 {q(heads, 0.5) * 1000:.0f} / max {max(heads) * 1000:.0f} ms, body p50 "
            f"{q(bodies, 0.5):.2f} / max {max(bodies):.2f} s ({q(rates, 0.5):.0f} MiB/s per "
            f"stream p50), last range started at {last_start:.2f} s")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


# --- the benchmark --------------------------------------------------------------------------

CLIENTS = ("stack", "env", "mlflow")


def client_extra(client: str) -> dict[str, str]:
    """What a client mode adds to the client's environment."""
    extra = {"ARTIFACT_CLIENT_REPO": "stack" if client == "stack" else "mlflow"}
    if client == "stack":
        extra["ARTIFACT_CLIENT_RANGE_TIMES"] = "1"
    if client == "env":
        extra.update(ARTIFACT_TRANSFER_ENV)
    return extra


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    ap.add_argument("--client", default="stack",
                    help="client mode(s), comma-separated, measured alternately in one run: "
                         "stack (default), env, mlflow; e.g. --client mlflow,stack")
    ap.add_argument("--set", dest="env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra client env (repeatable), applied last")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra server env (repeatable), for experiments")
    ap.add_argument("--workdir", type=Path, default=None, help="where files go (default: tmp)")
    args = ap.parse_args()
    clients = [c.strip() for c in args.client.split(",") if c.strip()]
    if not clients or any(c not in CLIENTS for c in clients):
        ap.error(f"--client takes one or more of {', '.join(CLIENTS)}")
    size = args.size_mib * MIB

    with tempfile.TemporaryDirectory(prefix="artifact-io-", dir=args.workdir) as tmp:
        base = Path(tmp)
        print(f"services and a {args.size_mib} MiB file in {base} ...", flush=True)
        src = base / "payload.bin"
        digest = make_file(src, size)
        with services(base) as (pg, s3):
            s3.client().create_bucket(Bucket=DIRECT_BUCKET)
            settings = platform_settings(pg, s3)
            state = StateDir(base / "state")
            server_env = parse_env(args.server_env)
            saved = {k: os.environ.get(k) for k in server_env}
            os.environ.update(server_env)  # platform.up passes our environment on to the server
            try:
                result = platform.up(settings, state, NullProgress())
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            try:
                envs = {c: client_env(settings.local_url, base / "client-home",
                                      {**client_extra(c), **parse_env(args.env)})
                        for c in clients}
                return run_rounds(args, base, src, digest, size, s3, settings, state,
                                  result.record.pid, envs)
            finally:
                platform.down(state)


def run_rounds(args: argparse.Namespace, base: Path, src: Path, digest: str, size: int,
               s3: S3Server, settings: Settings, state: StateDir, server_pid: int,
               envs: dict[str, dict[str, str]]) -> int:
    print(f"server pid {server_pid} at {settings.local_url}; {os.cpu_count()} CPUs, {load()} "
          "(1/5 min)", flush=True)
    for client, env in envs.items():
        shown = {k: v for k, v in env.items() if k.startswith(("MLFLOW_", "ARTIFACT_CLIENT"))}
        print(f"client {client}: {shown}", flush=True)
    # Every worker pays its one-time first-use cost (boto3, S3 client, ORM) before the baselines,
    # so each transfer's growth is what the file costs; the first-use cost is printed too.
    cold = sample_memory(server_pid)
    primed = prime_workers(settings.local_url, server_pid)
    print(f"first use: tree USS +{fmt_mib(sample_memory(server_pid).uss - cold.uss)} ("
          + ", ".join(fmt_mib(g) for g in primed.values()) + " per worker)", flush=True)

    gateway = psutil.Process(s3._proc.pid) if s3._proc else None

    def gateway_cpu() -> float:
        return sum(gateway.cpu_times()[:2]) if gateway else 0.0

    kinds = [*envs, "direct"]
    totals = {(op, who): Totals() for op in ("upload", "download") for who in kinds}
    watches: list[tuple[str, WatchReport]] = []
    range_lines: list[str] = []
    peak_uss = cold.uss
    s3c = s3.client()
    for rnd in range(args.rounds):
        order = kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]  # rotate who goes first
        if rnd % 2:
            order.reverse()
        uploaded: dict[str, tuple[str, str]] = {}  # client -> (run id, artifact path)
        direct_key = f"bench/{uuid.uuid4().hex}/payload.bin"
        for op in ("upload", "download"):
            for who in order:
                got = base / f"dl-{who}-{rnd}" / src.name
                got.parent.mkdir(exist_ok=True)
                g0 = gateway_cpu()
                with ServerWatch(server_pid, [state.root], ignore_files={state.log_file}) as watch:
                    if who == "direct":
                        seconds, cpu = direct_transfer(
                            s3, op, direct_key, src if op == "upload" else got)
                    elif op == "upload":
                        t = run_transfer("upload", envs[who], "bench", str(src))
                        uploaded[who] = (t.run_id, t.path)
                        seconds, cpu = t.seconds, t.cpu_seconds
                    else:
                        t = run_transfer("download", envs[who], *uploaded[who], str(got.parent))
                        seconds, cpu = t.seconds, t.cpu_seconds
                        if t.ranges:
                            range_lines.append(f"round {rnd + 1} download ({who}): "
                                               + range_summary(t.ranges))
                totals[op, who].add(size, seconds, cpu, gateway_cpu() - g0)
                if who != "direct":
                    watches.append((f"round {rnd + 1} {op} ({who})", watch.report))
                    peak_uss = max(peak_uss, watch.report.peak_uss)
                if op == "download":
                    if rnd == 0 and who != "direct" and sha256(got) != digest:
                        print(f"checksum mismatch on the platform download ({who})",
                              file=sys.stderr)
                        return 1
                    got.unlink()
        s3c.delete_object(Bucket=DIRECT_BUCKET, Key=direct_key)
        print(f"round {rnd + 1} ({load()}): " + "; ".join(
            f"{op} " + " / ".join(f"{who} {totals[op, who].runs[-1]:.0f}" for who in kinds)
            + " MiB/s, ratio " + " / ".join(
                f"{who} {totals[op, who].runs[-1] / totals[op, 'direct'].runs[-1]:.2f}x"
                for who in envs) for op in ("upload", "download")), flush=True)

    print(f"\n{args.size_mib} MiB x {args.rounds} rounds; platform/direct throughput ratio, "
          "and CPU s/GiB in the client and in the S3 gateway:")
    for op in ("upload", "download"):
        d = totals[op, "direct"]
        print(f"{op}: direct {d.mib_s:6.1f} MiB/s, CPU client {d.cpu_per_gib(d.client_cpu):.1f}"
              f" gateway {d.cpu_per_gib(d.gateway_cpu):.1f}")
        for client in envs:
            p = totals[op, client]
            print(f"  platform ({client:6s}) {p.mib_s:6.1f} MiB/s  ratio {p.mib_s / d.mib_s:.2f}x"
                  f"  CPU client {p.cpu_per_gib(p.client_cpu):.1f} gateway "
                  f"{p.cpu_per_gib(p.gateway_cpu):.1f}")
    print("per round, platform/direct throughput (and CPU s/GiB, client + gateway: "
          "platform vs direct):")
    for op in ("upload", "download"):
        d = totals[op, "direct"]
        for client in envs:
            p = totals[op, client]
            print(f"  {op:8s} {client:6s} " + "  ".join(
                f"{pr / dr:.2f}x ({pc:.1f} vs {dc:.1f})"
                for pr, dr, pc, dc in zip(p.runs, d.runs, p.run_cpu, d.run_cpu, strict=True)))
    print("  direct MiB/s per round: " + "; ".join(
        f"{op} " + " / ".join(f"{r:.0f}" for r in totals[op, "direct"].runs)
        for op in ("upload", "download")))
    if range_lines:
        print("streamed downloads, per range:")
        for line in range_lines:
            print("  " + line)
    print("server process tree during each platform transfer (growth over the primed baseline):")
    for label, report in watches:
        print_watch(label, report)
    worst = max(max(r.uss_growth, r.rss_growth) for _, r in watches)
    print(f"max growth during a transfer {fmt_mib(worst)} (limit 64 MiB); USS peak over the cold"
          f" start (incl. first use) {fmt_mib(max(0, peak_uss - cold.uss))}")

    print(f"\ngoals ({args.rounds} rounds, {args.size_mib} MiB, {load()} at the end):")
    for op in ("upload", "download"):
        for client in envs:
            ratios = [p / d for p, d in zip(totals[op, client].runs, totals[op, "direct"].runs,
                                            strict=True)]
            verdict = "PASS" if min(ratios) >= RATIO_GOAL else "FAIL"
            print(f"{verdict} {op} ({client}) >= {RATIO_GOAL:.2f}x of direct boto3 in every "
                  f"round: min {min(ratios):.2f}x, max {max(ratios):.2f}x "
                  f"({sum(r >= RATIO_GOAL for r in ratios)}/{len(ratios)} rounds)")
    print(f"{'PASS' if worst < MEMORY_LIMIT else 'FAIL'} server memory growth < "
          f"{fmt_mib(MEMORY_LIMIT)} during every transfer: max {fmt_mib(worst)} (USS or RSS)")
    largest = max((max(r.largest_open_file.size, r.largest_dir_file.size, r.dir_growth), label)
                  for label, r in watches)
    print(f"{'PASS' if largest[0] < FILE_LIMIT else 'FAIL'} no temporary copy (no server file "
          f">= {fmt_mib(FILE_LIMIT)} open or in its state dir/TMPDIR, nor that much growth): "
          f"largest {fmt_mib(largest[0])} ({largest[1]})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--direct-worker":
        sys.exit(_direct_worker(*sys.argv[2:7]))
    sys.exit(main())
