"""TLS client contexts that threads can share.

httpcore (under httpx and lightkube's httpx2) calls ``set_alpn_protocols`` on the client's one
SSLContext before every new connection. OpenSSL frees the old list then, while CPython runs
another thread's ``SSL_new`` (which copies that list) without the GIL: a connection opened at
that moment sends a garbled ClientHello and the server answers "tlsv1 alert decode error".
Any client used by several threads at once (apply's parallel Kubernetes reads, the server's
Keycloak lookups from its request threads) needs a context where setting the same list again
does nothing. (Here, in the server runtime, because the server may import only its own
package; the tool's Kubernetes client uses it too.)
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable

import httpx

# What httpcore sets without HTTP/2, which none of our clients enable.
HTTP1_ALPN = ["http/1.1"]


class SteadyAlpnContext(ssl.SSLContext):
    """An SSLContext whose ALPN list changes only when a different list is set."""

    _alpn: list[str] | None = None

    def set_alpn_protocols(self, alpn_protocols: Iterable[str]) -> None:
        wanted = list(alpn_protocols)
        if wanted != self._alpn:
            super().set_alpn_protocols(wanted)
            self._alpn = wanted


def shareable(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """`ctx` itself (CA, certificates and options kept), made a SteadyAlpnContext with the
    HTTP/1.1 list set. Other SSLContext subclasses (truststore's, on macOS/Windows) are
    returned unchanged: their state lives elsewhere."""
    if type(ctx) is ssl.SSLContext:
        ctx.__class__ = SteadyAlpnContext
        ctx.set_alpn_protocols(HTTP1_ALPN)
    return ctx


def verifying(verify: bool | str) -> ssl.SSLContext:
    """A shareable context as httpx builds it for ``verify=``: True its default trust, False
    none, a path that CA file or directory (without httpx's deprecation warning for paths)."""
    if isinstance(verify, str):
        if os.path.isdir(verify):
            return shareable(ssl.create_default_context(capath=verify))
        return shareable(ssl.create_default_context(cafile=verify))
    return shareable(httpx.create_ssl_context(verify=verify))
