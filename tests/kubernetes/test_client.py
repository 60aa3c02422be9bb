"""The API client: one TLS context, shared by parallel reads, not rewritten per connection."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
from lightkube.resources.core_v1 import Namespace

from harness.kube import settings_with
from harness.kubeapi import KubeAPIServer
from mlflow_stack.kubernetes.client import connect


@pytest.fixture
def ssl_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """What reaches the stdlib context: ALPN lists set, sockets wrapped."""
    calls: dict[str, list[Any]] = {"alpn": [], "wrap": []}
    set_alpn, wrap = ssl.SSLContext.set_alpn_protocols, ssl.SSLContext.wrap_socket

    def counted_alpn(self: ssl.SSLContext, protocols: Iterable[str]) -> None:
        calls["alpn"].append(list(protocols))
        set_alpn(self, protocols)

    def counted_wrap(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        calls["wrap"].append(kwargs.get("server_hostname"))
        return wrap(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "set_alpn_protocols", counted_alpn)
    monkeypatch.setattr(ssl.SSLContext, "wrap_socket", counted_wrap)
    return calls


def test_connections_do_not_rewrite_the_shared_alpn_list(
        kube_api: KubeAPIServer, ssl_calls: dict[str, list[Any]]) -> None:
    """httpcore sets the ALPN list on the shared context before each new connection, racing a
    concurrent handshake's copy of it; the client's context takes the list once."""
    settings = settings_with({"kubernetes": {"kubeconfig": str(kube_api.admin_kubeconfig),
                                             "namespace": f"mlf-{uuid.uuid4().hex[:8]}"}})
    kube = connect(settings)
    # A watch holds its connection open, so the read beside it opens a second one.
    watch = kube.client.watch(Namespace)
    try:
        assert next(iter(watch))[0] == "ADDED"
        assert kube.client.get(Namespace, "default").metadata is not None
    finally:
        watch.close()  # type: ignore[attr-defined]
    assert len(ssl_calls["wrap"]) >= 2, ssl_calls
    assert ssl_calls["alpn"] == [["http/1.1"]]  # set by connect, not per connection
