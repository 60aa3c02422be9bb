"""Indexes MLflow's schema lacks for what users do on a store of realistic size.

Pure data: the DDL, each statement idempotent (``CREATE INDEX IF NOT EXISTS`` with a fixed
``mlflow_stack_`` name, so it can be told apart from MLflow's own indexes and dropped again).
Measured by ``bench/scale.py --tuning`` (a year of a team's data: 10,000 runs, 10 M metric
points); the bench applies them in this order and reports what each one buys.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TuningIndex:
    name: str
    ddl: str
    why: str


INDEXES: tuple[TuningIndex, ...] = (
    # The experiment page: runs of one experiment, newest first, 100 at a time. MLflow has no
    # index on runs.experiment_id at all, so every page reads and sorts all the experiment's
    # runs (SELECT DISTINCT runs.* ... ORDER BY ... OFFSET n LIMIT 101). MLflow's ORDER BY is
    # (CASE WHEN start_time IS NULL THEN 1 ELSE 0 END), start_time DESC, run_uuid: the index
    # carries that exact expression so PostgreSQL can walk it in the page's order (an
    # incremental sort adds DISTINCT's other columns) and stop after offset + 101 rows.
    TuningIndex(
        "mlflow_stack_runs_experiment_page",
        "CREATE INDEX IF NOT EXISTS mlflow_stack_runs_experiment_page ON runs "
        "(experiment_id, (CASE WHEN start_time IS NULL THEN 1 ELSE 0 END), start_time DESC, "
        "run_uuid)",
        "runs of an experiment in the experiment page's order",
    ),
    # Filters and sorts on a metric (metrics.val_loss < x, order by metrics.val_loss) join
    # latest_metrics by key; the primary key (key, run_uuid) finds the key but not the value.
    TuningIndex(
        "mlflow_stack_latest_metrics_key_value",
        "CREATE INDEX IF NOT EXISTS mlflow_stack_latest_metrics_key_value "
        "ON latest_metrics (key, value, run_uuid)",
        "metric filters and order by a metric",
    ),
    # params.x = 'y' / tags.x = 'y' filters: the primary keys (key, run_uuid) find the key but
    # then read every run's value of it.
    TuningIndex(
        "mlflow_stack_params_key_value",
        "CREATE INDEX IF NOT EXISTS mlflow_stack_params_key_value "
        "ON params (key, value, run_uuid)",
        "param filters",
    ),
    TuningIndex(
        "mlflow_stack_tags_key_value",
        "CREATE INDEX IF NOT EXISTS mlflow_stack_tags_key_value "
        "ON tags (key, value, run_uuid)",
        "tag filters",
    ),
)
