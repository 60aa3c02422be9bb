"""The TLS certificate check's host matching (RFC 6125), without a cluster."""

from __future__ import annotations

from mlflow_stack.ops.doctor.cluster import tls


def test_wildcard_matches_one_label_only() -> None:
    assert tls._host_matches("mlflow.example.test", ["*.example.test"])
    assert not tls._host_matches("a.mlflow.example.test", ["*.example.test"])
    assert not tls._host_matches("example.test", ["*.example.test"])
    assert tls._host_matches("MLflow.Example.test", ["mlflow.example.test"])
