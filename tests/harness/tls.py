"""TLS material and instrumentation for tests: self-signed certificates, calls into `ssl`."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, valid one day, made by the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass
class SslCalls:
    """What reached the stdlib's SSLContext: ALPN lists set, sockets wrapped (server names)."""

    alpn: list[list[str]] = field(default_factory=list)
    wraps: list[str | None] = field(default_factory=list)


def count_ssl_calls(monkeypatch: pytest.MonkeyPatch) -> SslCalls:
    calls = SslCalls()
    set_alpn, wrap = ssl.SSLContext.set_alpn_protocols, ssl.SSLContext.wrap_socket

    def counted_alpn(self: ssl.SSLContext, protocols: Any) -> None:
        calls.alpn.append(list(protocols))
        set_alpn(self, protocols)

    def counted_wrap(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if not kwargs.get("server_side"):
            calls.wraps.append(kwargs.get("server_hostname"))
        return wrap(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "set_alpn_protocols", counted_alpn)
    monkeypatch.setattr(ssl.SSLContext, "wrap_socket", counted_wrap)
    return calls
