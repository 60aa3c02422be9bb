"""The TLS certificate: kubernetes.tls_secret (or kubernetes.existing_secrets.tls) exists, holds
a certificate for the public host that is valid for more than CERT_MIN_DAYS days, and the key
that goes with it."""

from __future__ import annotations

import base64
import binascii
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from lightkube.resources.core_v1 import Secret

from mlflow_stack.config.existing_secrets import tls_secret_name
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.kubernetes import sources
from mlflow_stack.kubernetes.client import Kube, connect, get_or_none
from mlflow_stack.manifests import network
from mlflow_stack.ops.doctor.cluster.common import kube_problem
from mlflow_stack.ops.doctor.findings import Finding, ok, problem

TLS = "TLS certificate"
CERT_MIN_DAYS = 14


def _host_matches(host: str, names: list[str]) -> bool:
    """RFC 6125 matching: exact, or a wildcard for exactly one leftmost label."""
    host = host.lower().rstrip(".")
    for pattern in (n.lower().rstrip(".") for n in names):
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host and host.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def cert_names(cert: x509.Certificate) -> list[str]:
    """The DNS names a certificate is for (SANs; the CN only when it has no SAN, as browsers)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return list(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _decode(data: dict[str, str] | None, key: str) -> bytes | None:
    value = (data or {}).get(key)
    if not value:
        return None
    try:
        return base64.b64decode(value)
    except (binascii.Error, ValueError):
        return None


def _key_matches(cert: x509.Certificate, key_pem: bytes) -> bool | None:
    """True/False when the key can be read; None when it cannot (encrypted, unknown type)."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt))


def _renew_fix(settings: Settings, what: str) -> str:
    k = settings.kubernetes
    if k.existing_secrets.tls:
        return (f"{what} in Secret {k.namespace}/{k.existing_secrets.tls} where it comes from "
                "(cert-manager, an ExternalSecret, ...): mlflow-stack never writes "
                "kubernetes.existing_secrets.tls")
    source = sources.tls_source(settings)
    create = (f"kubectl -n {k.namespace} create secret tls {k.tls_secret} --cert=FULLCHAIN.pem "
              "--key=KEY.pem")
    if source is None:
        return f"{what}: {create}"
    return (f"{what} in Secret {source[0]}/{source[1]} (the certificate apply copies; "
            f"cert-manager or your CA renews it there) and run mlflow-stack apply; or {create}")


def check_tls(settings: Settings, kube: Kube | None = None,
              now: dt.datetime | None = None) -> Finding:
    k = settings.kubernetes
    host = settings.public_hostname
    if host is None:
        return ok(TLS, "no public host name: no Ingress, no certificate")
    if not network.uses_tls(settings):
        return ok(TLS, f"server.public_scheme is http: {host} is served without TLS")
    if k.route != "ingress":
        return ok(TLS, f"kubernetes.route is {k.route}: the certificate is the Gateway "
                  f"listener's ({k.gateway_name}), not ours")
    name = tls_secret_name(settings)
    where = f"{k.namespace}/{name}"
    try:
        kube = kube or connect(settings)
        secret = get_or_none(kube, Secret, name, k.namespace)
    except StackError as exc:
        return kube_problem(TLS, exc)
    if secret is None:
        return problem(TLS, f"Secret {where} (the Ingress's certificate for {host}) does not "
                       "exist: the ingress serves its default certificate",
                       _renew_fix(settings, "put the certificate"))
    crt, key = _decode(secret.data, "tls.crt"), _decode(secret.data, "tls.key")
    if crt is None or key is None:
        missing = " and ".join(n for n, v in (("tls.crt", crt), ("tls.key", key)) if v is None)
        return problem(TLS, f"Secret {where} has no {missing}",
                       _renew_fix(settings, "put the certificate and its key"))
    try:
        cert = x509.load_pem_x509_certificates(crt)[0]  # the leaf comes first in a chain
    except ValueError:
        return problem(TLS, f"tls.crt in Secret {where} is not a PEM certificate",
                       _renew_fix(settings, "put a PEM certificate (full chain)"))
    now = now or dt.datetime.now(dt.UTC)
    expires = cert.not_valid_after_utc
    days = (expires - now).total_seconds() / 86400
    names = cert_names(cert)
    issuer = cert.issuer.rfc4514_string() or "?"
    problems = []
    if expires <= now:
        problems.append(f"the certificate expired on {expires:%Y-%m-%d %H:%M} UTC")
    elif cert.not_valid_before_utc > now:
        problems.append(f"the certificate is not valid before "
                        f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    elif days < CERT_MIN_DAYS:
        problems.append(f"the certificate expires in {days:.1f} days "
                        f"({expires:%Y-%m-%d %H:%M} UTC)")
    if not _host_matches(host, names):
        problems.append(f"the certificate is for {', '.join(names) or 'no host name'}, "
                        f"not {host}")
    if _key_matches(cert, key) is False:
        problems.append("tls.key is not the certificate's key")
    if problems:
        return problem(TLS, f"Secret {where}: " + "; ".join(problems),
                       _renew_fix(settings, f"renew the certificate for {host}"))
    return ok(TLS, f"Secret {where}: valid for {host} until {expires:%Y-%m-%d} "
              f"({days:.0f} days), issued by {issuer}")
