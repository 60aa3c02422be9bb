"""The API client: one TLS context, shared by parallel reads, not rewritten per connection."""

from __future__ import annotations

import uuid

from lightkube.resources.core_v1 import Namespace

from harness.kube import settings_with
from harness.kubeapi import KubeAPIServer
from harness.tls import SslCalls
from mlflow_stack.kubernetes.client import connect


def test_connections_do_not_rewrite_the_shared_alpn_list(
        kube_api: KubeAPIServer, ssl_calls: SslCalls) -> None:
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
    assert len(ssl_calls.wraps) >= 2, ssl_calls
    assert ssl_calls.alpn == [["http/1.1"]]  # set by connect, not per connection
