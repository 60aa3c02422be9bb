"""The fast read paths with their fixed statements on psycopg's cursor vs through SQLAlchemy.

``server/driver_rows.py`` runs the fast paths' fixed statements on the driver's cursor of the
pooled connection; before, SQLAlchemy executed them (cache key, execution context, result
metadata, Row objects on every call). This loads a store with ``bench/scale.py``'s loader
(``--runs``, default 2,000), then calls each fast path in this process, alternating the two
ways call by call (same pooled engine, the platform's idle ping), and prints p50 per way and
their ratio. One run, one sitting: read the ratios, not the absolute times.

    .venv/bin/python bench/driver_rows.py --runs 2000 --calls 3000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale  # bench/scale.py: the loader

from harness.postgres import start_postgres
from mlflow_stack.server import driver_rows
from mlflow_stack.server.patches import fast_reads, fast_registry, idle_ping


def _through_sqlalchemy(connection: Any, statement: Any,
                        values: dict[str, Any] | None = None) -> list[Any]:
    return list(connection.execute(statement, dict(values or {})).all())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=3000, help="calls per path and way")
    args = parser.parse_args()

    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as Registry
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as Tracking

    root = Path(tempfile.mkdtemp(prefix="driver-rows-"))
    pg = start_postgres(root / "pg")
    try:
        scale.create_schema(pg)
        print(f"loading {args.runs:,} runs ...", flush=True)
        dataset, _ = scale.load(pg, scale.Shape(args.runs, 10, 100, 30, 10), 15)
        os.environ["PGPASSWORD"] = pg.password
        fast_registry.install(Registry)
        uri = scale.backend_uri(pg)
        tracking: Any = Tracking(uri, str(root / "artifacts"))
        registry: Any = Registry(uri)
        for store in (tracking, registry):
            idle_ping.ping_when_idle(store.engine, idle_ping.ping_after())
        paths: dict[str, Callable[[], Any]] = {
            "metric history (1 run)": lambda: fast_reads.history_json(
                tracking, dataset.run_id, "loss", None, None),
            "artifact location": lambda: fast_reads.artifact_location(
                tracking, dataset.run_id).info.artifact_uri,
            "search model versions": lambda: registry.search_model_versions(
                f"name='{dataset.model_name}'", 25),
            "search registered models": lambda: registry.search_registered_models(
                None, 25, ["name ASC"]),
        }
        ways: dict[str, Callable[..., list[Any]]] = {
            "driver": driver_rows.fetch_all, "sqlalchemy": _through_sqlalchemy}
        print(f"{'path':26s} {'driver p50 ms':>14s} {'sqlalchemy p50 ms':>18s} {'ratio':>7s}")
        for name, call in paths.items():
            samples: dict[str, list[float]] = {way: [] for way in ways}
            answers = {}
            for way, fetch in ways.items():  # same answer both ways, and warm
                fast_reads.fetch_all = fast_registry.fetch_all = fetch
                answers[way] = repr(call())
            if answers["driver"] != answers["sqlalchemy"]:
                raise SystemExit(f"{name}: the two ways answered differently")
            for _ in range(args.calls):
                for way, fetch in ways.items():
                    fast_reads.fetch_all = fast_registry.fetch_all = fetch
                    started = time.perf_counter()
                    call()
                    samples[way].append(1000 * (time.perf_counter() - started))
            driver, through = (statistics.median(samples[w]) for w in ways)
            print(f"{name:26s} {driver:14.3f} {through:18.3f} {driver / through:6.2f}x",
                  flush=True)
        for store in (tracking, registry):
            store.engine.dispose()
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
