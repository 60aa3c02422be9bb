"""Indexes MLflow's schema lacks for what users do on a store of realistic size.

Pure data: each index's table, columns and a fixed ``mlflow_stack_`` name (told apart from
MLflow's own indexes, dropped again by name); its DDL is idempotent (``CREATE INDEX [CONCURRENTLY]
IF NOT EXISTS``). components/postgres_indexes.py creates them in MLflow's database.
Measured by ``bench/scale.py --tuning`` on a year of a team's data (10,000 runs, 20 params and
10 tags per run, 10 M metric points): each index's gain is an interleaved A/B of MLflow's own
SQL for the call, with and without the index (dropped inside a rolled-back transaction).

Only indexes that clearly helped are here. Tried and left out (see the bench's ``CANDIDATES``):
an index for the experiment page's order on runs (the planner keeps its seq scan + sort: MLflow
selects ``DISTINCT runs.*``, so it must sort every column of the experiment's runs anyway),
latest_metrics (key, value) (0.9x at best, within noise), and the settings jit = off (no query
comes near jit_above_cost), work_mem / random_page_cost (no change).

These buy a few tens of milliseconds of SQL on a filtered search; the time users wait for is
mostly in the server's Python (ORM objects, protobuf to JSON, garbage collection): see the
bench's output and the findings of issue 15.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TuningIndex:
    name: str
    table: str
    columns: tuple[str, ...]
    why: str

    def ddl(self, *, concurrently: bool = False) -> str:
        """``CREATE INDEX`` if it does not exist; ``concurrently`` builds it without blocking
        writes to the table (not inside a transaction; an interrupted build leaves it invalid)."""
        how = " CONCURRENTLY" if concurrently else ""
        return (f"CREATE INDEX{how} IF NOT EXISTS {self.name} "
                f"ON {self.table} ({', '.join(self.columns)})")


INDEXES: tuple[TuningIndex, ...] = (
    # params.x = 'y' filters (the runs table's filter box, e.g. params.optimizer = 'adam'):
    # MLflow's primary key (key, run_uuid) finds the key but then reads every run's value of it
    # from the heap (10,000 rows for one key). With (key, value, run_uuid) it is an index-only
    # scan of the matching runs. Measured: the param-filter search's SQL 0.46x (35 vs 78 ms).
    TuningIndex("mlflow_stack_params_key_value", "params", ("key", "value", "run_uuid"),
                "param filters: index-only scan of the matching runs"),
    # tags.x = 'y' filters (tags.team = 'vision'), the same shape as params. Measured: the
    # tag-filter search's SQL 0.67x (55 vs 83 ms).
    TuningIndex("mlflow_stack_tags_key_value", "tags", ("key", "value", "run_uuid"),
                "tag filters: index-only scan of the matching runs"),
)
