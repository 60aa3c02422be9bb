"""The S3 artifact bucket: created if missing, checked for access."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from mlflow_stack.components.base import Change
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import ConfigError, ServiceUnreachable


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


def plan_bucket(settings: Settings) -> list[Change]:
    """What ensure_bucket would do, read only (it connects, so credentials are checked)."""
    bucket = settings.artifacts.bucket
    if _bucket_exists(s3_client(settings), settings):
        return [Change("bucket", "unchanged", f"bucket {bucket}")]
    return [Change("bucket", "create", f"bucket {bucket}")]


def ensure_bucket(settings: Settings) -> Change:
    """Create the artifact bucket if it does not exist. Idempotent."""
    bucket = settings.artifacts.bucket
    client = s3_client(settings)
    if _bucket_exists(client, settings):
        return Change("bucket", "unchanged", f"bucket {bucket}")
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        raise ServiceUnreachable(
            f"S3 at {_where(settings)} refused to create bucket {bucket!r}: {exc}") from None
    return Change("bucket", "create", f"bucket {bucket}")
