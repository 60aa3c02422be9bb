"""The harness services are real: password auth is enforced, S3 calls and presigned URLs work."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psycopg
import pytest
from botocore.exceptions import ClientError

from harness.postgres import PostgresServer, start_postgres
from harness.s3 import S3Server, start_s3

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

pytestmark = pytest.mark.integration


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _bucket_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def test_postgres_password_login_creates_database(postgres_server: PostgresServer) -> None:
    name = f"harness_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        # Loopback only, and no rule lets anyone in without a password.
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        methods = {row[0] for row in conn.execute("SELECT auth_method FROM pg_hba_file_rules")}
        assert methods == {"scram-sha-256"}
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(postgres_server.dsn(name)) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('ünïcode')")
        assert conn.execute("SELECT v FROM t").fetchone() == ("ünïcode",)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)


def test_postgres_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.dsn().replace(postgres_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsn, connect_timeout=5)


def test_postgres_stop_frees_port_and_data(tmp_path: Path) -> None:
    server = start_postgres(tmp_path)
    datadir = server.datadir
    assert _port_open(server.port)
    server.stop()
    assert not _port_open(server.port)
    assert not datadir.exists()
    server.stop()  # idempotent


def test_s3_bucket_put_get_list(s3_server: S3Server) -> None:
    s3 = s3_server.client()
    bucket = _bucket_name()
    s3.create_bucket(Bucket=bucket)
    assert bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    s3.put_object(Bucket=bucket, Key="artifacts/1/run/model.pkl", Body=b"hello s3")
    assert s3.get_object(Bucket=bucket, Key="artifacts/1/run/model.pkl")["Body"].read() == (
        b"hello s3"
    )
    ranged = s3.get_object(Bucket=bucket, Key="artifacts/1/run/model.pkl", Range="bytes=6-7")
    assert ranged["Body"].read() == b"s3"
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="artifacts/1/")
    assert [o["Key"] for o in listing["Contents"]] == ["artifacts/1/run/model.pkl"]
    assert s3.head_object(Bucket=bucket, Key="artifacts/1/run/model.pkl")["ETag"]


def test_s3_wrong_secret_is_refused(s3_server: S3Server) -> None:
    s3_server_bad = S3Server(
        endpoint_url=s3_server.endpoint_url, access_key=s3_server.access_key,
        secret_key="wrong-secret-key", log_path=s3_server.log_path, startup_seconds=0.0,
    )
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        s3_server_bad.client().list_buckets()


def test_s3_presigned_multipart_upload_and_get(s3_server: S3Server) -> None:
    """MLflow's path for large artifacts: presigned part PUTs, then presigned (ranged) GETs."""
    s3 = s3_server.client()
    bucket, key = _bucket_name(), "big/model.bin"
    s3.create_bucket(Bucket=bucket)
    parts_data = [os.urandom(5 * 1024 * 1024), b"last part may be small"]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts: list[CompletedPartTypeDef] = []
    with httpx.Client(timeout=30) as http:
        for number, data in enumerate(parts_data, start=1):
            url = s3.generate_presigned_url(
                "upload_part", ExpiresIn=300,
                Params={"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": number},
            )
            response = http.put(url, content=data)
            assert response.status_code == 200, response.text
            parts.append({"PartNumber": number, "ETag": response.headers["etag"]})
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
        )

        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300,
        )
        response = http.get(url)
        assert response.status_code == 200
        assert response.content == b"".join(parts_data)
        response = http.get(url, headers={"Range": "bytes=0-9"})
        assert response.status_code == 206
        assert response.content == parts_data[0][:10]


def test_s3_stop_frees_port(tmp_path: Path) -> None:
    server = start_s3(tmp_path)
    port = int(server.endpoint_url.rsplit(":", 1)[1])
    assert _port_open(port)
    server.stop()
    assert not _port_open(port)
    server.stop()  # idempotent
