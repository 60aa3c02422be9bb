#!/usr/bin/env python
"""Large-artifact throughput through the platform, relative to boto3 straight to the same S3.

Brings up the platform (`mlflow_stack.local.platform.up`) on a real PostgreSQL and a real S3
server (JuiceFS gateway) from the test harness, then moves one file of --size-mib up and down:

  platform  MLflow client in its own process with MLFLOW_TRACKING_URI only (no AWS_* variables,
            empty HOME): `mlflow.log_artifact` / `mlflow.artifacts.download_artifacts`;
  direct    boto3 `upload_file` / `download_file` (default TransferConfig) with the S3 keys,
            also in its own process.

Platform and direct runs alternate (order flipped every round) and only the transfer call is
timed. Prints throughput of each, the ratios platform/direct, and the growth of the server
process tree's memory (sum of USS and of RSS over all its processes) and the largest file the
server had open or wrote in its state dir during the platform transfers.

    .venv/bin/python bench/artifact_io.py [--size-mib 1024] [--rounds 2] [--client mlflow]
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

from pydantic import SecretStr  # noqa: E402

from harness.artifact_client import client_env, run_transfer  # noqa: E402
from harness.ports import free_port  # noqa: E402
from harness.postgres import PostgresServer, start_postgres  # noqa: E402
from harness.s3 import S3Server, start_s3  # noqa: E402
from harness.server_watch import ServerWatch, WatchReport  # noqa: E402
from mlflow_stack.client.artifacts import ARTIFACT_TRANSFER_ENV  # noqa: E402
from mlflow_stack.config.model import Settings  # noqa: E402
from mlflow_stack.config.secrets import Secrets  # noqa: E402
from mlflow_stack.local import platform  # noqa: E402
from mlflow_stack.local.state import StateDir  # noqa: E402
from mlflow_stack.progress import NullProgress  # noqa: E402

MIB = 2**20
BUCKET = "mlflow-bench"
DIRECT_BUCKET = "direct-bench"


@dataclass
class Totals:
    seconds: float = 0.0
    nbytes: int = 0
    runs: list[float] = field(default_factory=list)

    def add(self, seconds: float, nbytes: int) -> None:
        self.seconds += seconds
        self.nbytes += nbytes
        self.runs.append(nbytes / seconds / MIB)

    @property
    def mib_s(self) -> float:
        return self.nbytes / self.seconds / MIB if self.seconds else 0.0


# --- direct boto3 worker (runs in a child process, like the MLflow client) -----------------

def _direct_worker(op: str, endpoint: str, bucket: str, key: str, path: str) -> int:
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    started = time.perf_counter()
    if op == "upload":
        s3.upload_file(path, bucket, key)
    else:
        s3.download_file(bucket, key, path)
    print(json.dumps({"seconds": time.perf_counter() - started}))
    return 0


def direct_transfer(s3: S3Server, op: str, key: str, path: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key)
    proc = subprocess.run(
        [sys.executable, __file__, "--direct-worker", op, s3.endpoint_url, DIRECT_BUCKET, key,
         str(path)], env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"direct {op} failed:\n{proc.stderr[-4000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


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


# --- the benchmark --------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    ap.add_argument("--client", choices=["tuned", "mlflow"], default="tuned",
                    help="client transfer settings: ours (mlflow_stack.client.artifacts) or "
                         "MLflow's defaults")
    ap.add_argument("--set", dest="env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra client env (repeatable), applied last")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra server env (repeatable), for experiments")
    ap.add_argument("--workdir", type=Path, default=None, help="where files go (default: tmp)")
    args = ap.parse_args()

    extra_client = {} if args.client == "mlflow" else dict(ARTIFACT_TRANSFER_ENV)
    extra_client.update(parse_env(args.env))
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
                return run_rounds(args, base, src, digest, size, s3, settings, state,
                                  result.record.pid, extra_client)
            finally:
                platform.down(state)


def run_rounds(args: argparse.Namespace, base: Path, src: Path, digest: str, size: int,
               s3: S3Server, settings: Settings, state: StateDir, server_pid: int,
               extra_client: dict[str, str]) -> int:
    env = client_env(settings.local_url, base / "client-home", extra_client)
    shown = {k: v for k, v in env.items() if k.startswith("MLFLOW_")}
    print(f"server pid {server_pid} at {settings.local_url}; client env {shown}", flush=True)
    # Warm-up: one small artifact each way, so imports and connection pools of the workers are
    # in the baseline rather than counted as growth caused by the large file.
    warm = base / "warmup.txt"
    warm.write_text("warm-up\n")
    w = run_transfer("upload", env, "bench", str(warm))
    run_transfer("download", env, w.run_id, w.path, str(base / "warm-dl"))

    up = {"platform": Totals(), "direct": Totals()}
    down = {"platform": Totals(), "direct": Totals()}
    watches: list[tuple[str, WatchReport]] = []
    watch_dirs = [state.root]
    ignore = {state.log_file}
    s3c = s3.client()
    for rnd in range(args.rounds):
        order = ["platform", "direct"] if rnd % 2 == 0 else ["direct", "platform"]
        run_id = artifact = ""
        direct_key = f"bench/{uuid.uuid4().hex}/payload.bin"
        for who in order:  # uploads
            if who == "platform":
                with ServerWatch(server_pid, watch_dirs, ignore_files=ignore) as watch:
                    t = run_transfer("upload", env, "bench", str(src))
                watches.append((f"round {rnd + 1} upload", watch.report))
                run_id, artifact = t.run_id, t.path
                up[who].add(t.seconds, size)
            else:
                with ServerWatch(server_pid, watch_dirs, ignore_files=ignore):
                    seconds = direct_transfer(s3, "upload", direct_key, src)
                up[who].add(seconds, size)
        for who in order:  # downloads
            dst_dir = base / f"dl-{who}-{rnd}"
            dst_dir.mkdir()
            if who == "platform":
                with ServerWatch(server_pid, watch_dirs, ignore_files=ignore) as watch:
                    t = run_transfer("download", env, run_id, artifact, str(dst_dir))
                watches.append((f"round {rnd + 1} download", watch.report))
                got, seconds = Path(t.path), t.seconds
            else:
                got = dst_dir / "payload.bin"
                with ServerWatch(server_pid, watch_dirs, ignore_files=ignore):
                    seconds = direct_transfer(s3, "download", direct_key, got)
            down[who].add(seconds, size)
            if rnd == 0 and sha256(got) != digest:
                print(f"checksum mismatch on {who} download", file=sys.stderr)
                return 1
            got.unlink()
        s3c.delete_object(Bucket=DIRECT_BUCKET, Key=direct_key)
        print(f"round {rnd + 1}: up platform {up['platform'].runs[-1]:.0f} / direct "
              f"{up['direct'].runs[-1]:.0f} MiB/s; down platform {down['platform'].runs[-1]:.0f}"
              f" / direct {down['direct'].runs[-1]:.0f} MiB/s", flush=True)

    print(f"\n{args.size_mib} MiB x {args.rounds} rounds, client settings: {args.client}")
    for label, t in (("upload", up), ("download", down)):
        ratio = t["platform"].mib_s / t["direct"].mib_s
        print(f"{label:9s} platform {t['platform'].mib_s:7.1f} MiB/s   direct "
              f"{t['direct'].mib_s:7.1f} MiB/s   ratio {ratio:.2f}x")
    print("server process tree during platform transfers:")
    for label, report in watches:
        print_watch(label, report)
    worst = max(max(r.uss_growth, r.rss_growth) for _, r in watches)
    print(f"max memory growth {fmt_mib(worst)} (limit 64 MiB)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--direct-worker":
        sys.exit(_direct_worker(*sys.argv[2:7]))
    sys.exit(main())
