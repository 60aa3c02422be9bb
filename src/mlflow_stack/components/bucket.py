"""The S3 artifact bucket: created if missing, checked for access, deleted only by
`uninstall --purge`."""

from __future__ import annotations

import functools
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from mlflow_stack.components.base import Change
from mlflow_stack.components.protocol import Finding, Step, run_steps
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError, ServiceUnreachable, StackError
from mlflow_stack.progress import NullProgress, Progress

SYSTEM_NAME = "bucket"


def s3_client(settings: Settings) -> Any:
    a = settings.artifacts
    key, secret = settings.secrets.s3_access_key_id, settings.secrets.s3_secret_access_key
    if key is None or secret is None:
        raise ConfigError("S3 credentials are required: set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY")
    verify: bool | str = str(a.ca_bundle) if a.ca_bundle else a.verify_tls
    return boto3.client(
        "s3",
        endpoint_url=a.endpoint_url,
        region_name=a.region,
        aws_access_key_id=key.get_secret_value(),
        aws_secret_access_key=secret.get_secret_value(),
        verify=verify,
        # Fail fast on an unreachable endpoint instead of retrying for a minute.
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2},
                      s3={"addressing_style": "path"}),
    )


def _where(settings: Settings) -> str:
    return settings.artifacts.endpoint_url or "the AWS S3 endpoint"


def _bucket_exists(client: Any, settings: Settings) -> bool:
    """head_bucket, with failures as errors that name the endpoint."""
    bucket = settings.artifacts.bucket
    try:
        client.head_bucket(Bucket=bucket)
        return True
    except EndpointConnectionError:
        raise ServiceUnreachable(f"S3 at {_where(settings)} is unreachable",
                                 hint="Check artifacts.endpoint_url and that the server runs.") \
            from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise ServiceUnreachable(
                f"S3 at {_where(settings)} refused access to bucket {bucket!r} ({code})",
                hint="Check the S3 access key and secret key.") from None
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise ServiceUnreachable(f"S3 at {_where(settings)}: {exc}") from None
    except BotoCoreError as exc:
        raise ServiceUnreachable(f"S3 at {_where(settings)} failed: {exc}") from None
    return False


class S3:
    """The S3 client, built on first use: `uninstall` without --purge keeps the bucket and
    needs no keys."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @functools.cached_property
    def client(self) -> Any:
        return s3_client(self._settings)


class BucketSystem:
    """The S3 artifact bucket (the reference's SeaweedFS; any S3 server)."""

    name = SYSTEM_NAME

    def where(self, settings: Settings) -> str:
        return settings.artifacts.endpoint_url or "AWS S3"

    def connect(self, settings: Settings) -> S3:
        return S3(settings)

    def observe(self, s3: S3, settings: Settings) -> bool:
        """Whether the bucket exists (the request checks the keys too)."""
        return _bucket_exists(s3.client, settings)

    def plan(self, s3: S3, settings: Settings, observed: bool) -> list[Step]:
        bucket = settings.artifacts.bucket
        if observed:
            return [Step(Change(SYSTEM_NAME, "unchanged", f"bucket {bucket}"))]

        def create(progress: Progress) -> None:
            try:
                s3.client.create_bucket(Bucket=bucket)
            except ClientError as exc:
                raise ServiceUnreachable(f"S3 at {_where(settings)} refused to create bucket "
                                         f"{bucket!r}: {exc}") from None
        return [Step(Change(SYSTEM_NAME, "create", f"bucket {bucket}"), create)]

    def teardown(self, s3: S3, settings: Settings, *, purge: bool) -> list[Step]:
        """Delete the bucket and every object in it with `purge`; else keep it."""
        name = settings.artifacts.bucket
        if not purge:
            return [Step(Change(SYSTEM_NAME, "unchanged", f"bucket {name}",
                                "kept (--purge deletes it and every artifact in it)"))]
        client = s3.client
        if not _bucket_exists(client, settings):
            return [Step(Change(SYSTEM_NAME, "unchanged", f"bucket {name}", "does not exist"))]

        def delete(progress: Progress) -> None:
            count = 0
            try:
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                    keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                    if keys:
                        client.delete_objects(Bucket=name, Delete={"Objects": keys,
                                                                   "Quiet": True})
                        count += len(keys)
                client.delete_bucket(Bucket=name)
            except (ClientError, BotoCoreError) as exc:
                raise ServiceUnreachable(f"S3 refused to delete bucket {name!r}: {exc}") \
                    from None
            progress.detail(f"{count} object(s) deleted")
        return [Step(Change(SYSTEM_NAME, "delete", f"bucket {name}",
                            "with every artifact in it"), delete, destructive=True)]

    def check(self, settings: Settings) -> list[Finding]:
        """The bucket exists and the keys may write to it (a probe object, removed again)."""
        name, bucket = "artifact store", settings.artifacts.bucket
        key = ".mlflow-stack-doctor"
        try:
            s3 = self.connect(settings)
            s3.client.put_object(Bucket=bucket, Key=key, Body=b"doctor")
            s3.client.delete_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                return [Finding(name, "problem", f"bucket {bucket!r} does not exist",
                                "mlflow-stack apply (or up) creates it; restore artifacts from a "
                                "backup if it was deleted")]
            return [Finding(name, "problem", f"bucket {bucket!r} not writable ({code})",
                            "check the S3 keys and the bucket policy")]
        except (BotoCoreError, StackError) as exc:
            return [Finding(name, "problem", f"S3 at {settings.artifacts.endpoint_url}: {exc}",
                            "check artifacts.endpoint_url and that the S3 server runs")]
        return [Finding(name, "ok", f"bucket {bucket} reachable and writable")]


def ensure_bucket(settings: Settings) -> Change:
    """Create the artifact bucket if it does not exist (restore uses it). Idempotent."""
    client = SYSTEM.connect(settings)
    steps = SYSTEM.plan(client, settings, SYSTEM.observe(client, settings))
    return run_steps(SYSTEM_NAME, steps, NullProgress())[0]


SYSTEM = BucketSystem()
