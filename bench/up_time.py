"""Cold start: `mlflow-stack up` until healthy vs a bare `mlflow server` on the same backend.

Alternates the contenders in one run (these machines are noisy: compare only within a run) and
prints ratios. Each round uses a fresh state directory, so every start is cold (new SQLite
database, schema created at start).

    python bench/up_time.py --rounds 3
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from mlflow_stack.config.model import Settings
from mlflow_stack.launch.command import build_server_launch
from mlflow_stack.local.state import StateDir

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_health(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not become healthy")


def stop(proc: subprocess.Popen[bytes]) -> None:
    import os
    import signal

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def time_stack(root: Path) -> float:
    port = free_port()
    state = root / "stack"
    start = time.perf_counter()
    subprocess.run([str(BIN / "mlflow-stack"), "up", "--detach", "--port", str(port),
                    "--state-dir", str(state)], check=True, capture_output=True)
    took = time.perf_counter() - start
    subprocess.run([str(BIN / "mlflow-stack"), "down", "--state-dir", str(state)], check=True,
                   capture_output=True)
    return took


def time_bare(root: Path, same_flags: bool) -> float:
    port = free_port()
    state = StateDir(root / "bare")
    state.prepare()
    if same_flags:
        # Exactly the command line and environment mlflow-stack would run.
        launch = build_server_launch(Settings.model_validate({"server": {"port": port}}),
                                     state.server_paths(), executable=[str(BIN / "mlflow")])
        argv, env = launch.argv, {**dict(__import__("os").environ), **launch.env_dict()}
    else:
        # A bare `mlflow server` with MLflow's defaults on the same backend and artifact store.
        argv = [str(BIN / "mlflow"), "server", "--port", str(port), "--backend-store-uri",
                f"sqlite:///{state.data_dir / 'mlflow.db'}", "--artifacts-destination",
                str(state.artifacts_dir)]
        env = None
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=state.root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_health(f"http://127.0.0.1:{port}", proc)
        return time.perf_counter() - start
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"stack": [], "bare-defaults": [], "bare-same-flags": []}
    for i in range(args.rounds):
        for name in results:
            root = Path(tempfile.mkdtemp(prefix=f"upbench-{name}-"))
            try:
                took = (time_stack(root) if name == "stack"
                        else time_bare(root, same_flags=name == "bare-same-flags"))
            finally:
                shutil.rmtree(root, ignore_errors=True)
            results[name].append(took)
            print(f"round {i + 1}: {name:16s} {took:6.2f} s", flush=True)
    med = {name: statistics.median(v) for name, v in results.items()}
    print(f"\nmedian of {args.rounds} alternating rounds (seconds): "
          + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    print(f"ratio mlflow-stack up / bare mlflow server (MLflow defaults): "
          f"{med['stack'] / med['bare-defaults']:.2f}x  (goal <= 1.10x)")
    print(f"ratio mlflow-stack up / the same command line run directly: "
          f"{med['stack'] / med['bare-same-flags']:.2f}x  (our orchestration overhead)")


if __name__ == "__main__":
    main()
