"""`uninstall --purge` for the data systems: drop the databases, delete the bucket.

Kept apart from the provisioning modules: nothing else ever deletes data.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError
from psycopg import sql

from mlflow_stack.components import bucket, postgres
from mlflow_stack.components.base import Change
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ServiceUnreachable


def drop_database(settings: Settings, name: str, *, dry_run: bool = False) -> Change:
    """Drop a database. Open sessions are ended (WITH FORCE): the server that used it has been
    removed already. The owner role stays: other databases may belong to it."""
    target = postgres.admin_target(settings)
    with postgres.connect(target) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (name,)).fetchone() is not None
        if not exists:
            return Change("postgres", "unchanged", f"database {name}", "does not exist")
        if not dry_run:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    return Change("postgres", "delete", f"database {name}", "with every table in it")


def delete_bucket(settings: Settings, *, dry_run: bool = False) -> Change:
    """Delete the bucket and every object in it."""
    name = settings.artifacts.bucket
    client = bucket.s3_client(settings)
    if not bucket._bucket_exists(client, settings):
        return Change("bucket", "unchanged", f"bucket {name}", "does not exist")
    if dry_run:
        return Change("bucket", "delete", f"bucket {name}", "with every artifact in it")
    count = 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
                count += len(keys)
        client.delete_bucket(Bucket=name)
    except (ClientError, BotoCoreError) as exc:
        raise ServiceUnreachable(f"S3 refused to delete bucket {name!r}: {exc}") from None
    return Change("bucket", "delete", f"bucket {name}", f"with {count} object(s)")
