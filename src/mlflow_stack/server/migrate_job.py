"""Entry point of the Kubernetes migration Job: MLflow's schema, then the SSO layer's, to head.

    python -m mlflow_stack.server.migrate_job --backend-store-uri URI

`mlflow db upgrade` alone fails on an empty database (its first revision alters tables that only
the server's initial create_all makes), so an empty database is initialised the way the server
does it and an existing one is upgraded. The SSO layer's database (`OIDC_USERS_DB_URI`, set in the
server's environment) is migrated with mlflow-oidc-auth's own alembic chain, which honours
`OIDC_ALEMBIC_VERSION_TABLE`. Passwords come from the environment (PGPASSWORD), never the URI.
It is a program, not library code: it reports on stdout and exits non-zero on failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import sqlalchemy
from sqlalchemy.engine import make_url


def _safe(uri: str) -> str:
    return make_url(uri).render_as_string(hide_password=True)


def migrate_mlflow(uri: str) -> str:
    from mlflow.store.db import utils as mlflow_db

    utils: Any = mlflow_db  # MLflow's helpers are untyped; these are what its server calls

    engine = utils.create_sqlalchemy_engine_with_retry(uri)
    try:
        head = utils._get_latest_schema_revision()
        if not utils._all_tables_exist(engine):
            utils._initialize_tables(engine)
            return f"MLflow schema created at revision {head}"
        current = utils._get_schema_version(engine)
        if current == head:
            return f"MLflow schema current (revision {head})"
        utils._upgrade_db(engine)
        return f"MLflow schema upgraded from revision {current} to {head}"
    finally:
        engine.dispose()


def migrate_auth(uri: str) -> str:
    from mlflow_oidc_auth.db import utils as auth_utils

    engine = sqlalchemy.create_engine(uri)
    try:
        auth_utils.migrate(engine, "head")
    finally:
        engine.dispose()
    return "SSO schema at head"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="migrate_job", description=__doc__.splitlines()[0])
    parser.add_argument("--backend-store-uri", required=True)
    parser.add_argument("--only", choices=["all", "mlflow", "sso"], default="all",
                        help="Which database to migrate (local `up` migrates only the SSO one).")
    args = parser.parse_args(argv)
    steps = []
    if args.only in ("all", "mlflow"):
        steps.append(("MLflow", args.backend_store_uri, migrate_mlflow))
    auth_uri = os.environ.get("OIDC_USERS_DB_URI")
    if auth_uri and args.only in ("all", "sso"):
        steps.append(("SSO", auth_uri, migrate_auth))
    for what, uri, step in steps:
        try:
            print(f"{what} database {_safe(uri)}: {step(uri)}", flush=True)
        except Exception as exc:  # the Job's log must say which database and why
            print(f"{what} database {_safe(uri)}: migration failed: {type(exc).__name__}: "
                  f"{exc}", file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
