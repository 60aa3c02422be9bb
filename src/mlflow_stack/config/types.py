"""Constrained value types of the config model, each with an error that says what is expected."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
# Kubernetes resource.Quantity: decimal number with an optional binary/decimal SI suffix.
_QUANTITY_RE = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# PostgreSQL folds unquoted identifiers to lower case; a mixed-case name makes MLflow
# retry for minutes against a database that never matches, so only lower case is accepted.
_PG_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_K8S_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_QUANTITY_FACTORS = {
    "": 1, "m": 0.001, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def check_hostname(value: str) -> str:
    host = value.strip().lower().rstrip(".")
    if len(host) > 253 or not _HOSTNAME_RE.match(host):
        raise ValueError(
            f"{value!r} is not a valid hostname: expected DNS labels of letters, digits and '-' "
            "separated by dots, e.g. mlflow.example.com (no scheme, port or path)"
        )
    return host


def check_http_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{value!r} is not a valid URL: expected http:// or https:// followed by a host, "
            "e.g. https://keycloak.example.com"
        )
    try:
        parts.port  # noqa: B018 - raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid URL: {exc}") from None
    return value.strip().rstrip("/")


def check_quantity(value: str | int) -> str:
    text = str(value).strip()
    if not _QUANTITY_RE.match(text):
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity: expected a number with an optional suffix "
            "such as 1Gi, 500Mi, 10G or 250m (binary suffixes are Ki/Mi/Gi/Ti, not Kb/Gb)"
        )
    return text


def quantity_bytes(value: str) -> float:
    """The numeric value of a Kubernetes quantity (bytes for memory, cores for CPU)."""
    match = _QUANTITY_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    return float(match.group(1)) * _QUANTITY_FACTORS[match.group(3) or ""]


def check_bucket(value: str) -> str:
    text = value.strip()
    problem = None
    if not _BUCKET_RE.match(text):
        problem = "3-63 characters of lower-case letters, digits, '.' and '-', starting and ending "
        problem += "with a letter or digit"
    elif ".." in text or ".-" in text or "-." in text:
        problem = "no adjacent dots or a dot next to a hyphen"
    else:
        try:
            ipaddress.IPv4Address(text)
            problem = "not formatted as an IP address"
        except ValueError:
            pass
    if problem:
        raise ValueError(f"{value!r} is not a valid S3 bucket name: expected {problem}")
    return text


def check_pg_identifier(value: str) -> str:
    if not _PG_IDENT_RE.match(value):
        hint = ""
        if value.lower() != value and _PG_IDENT_RE.match(value.lower()):
            hint = f" (PostgreSQL folds unquoted names to lower case: use {value.lower()!r})"
        raise ValueError(
            f"{value!r} is not a valid PostgreSQL name: expected lower-case letters, digits and "
            f"'_', starting with a letter or '_', at most 63 characters{hint}"
        )
    return value


def check_k8s_name(value: str) -> str:
    if not _K8S_NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes name: expected at most 63 lower-case letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    return value


Hostname = Annotated[str, AfterValidator(check_hostname)]
HttpUrlStr = Annotated[str, AfterValidator(check_http_url)]
Quantity = Annotated[
    str, BeforeValidator(lambda v: str(v) if isinstance(v, int | float) else v),
    AfterValidator(check_quantity),
]
BucketName = Annotated[str, AfterValidator(check_bucket)]
PgIdentifier = Annotated[str, AfterValidator(check_pg_identifier)]
K8sName = Annotated[str, AfterValidator(check_k8s_name)]
Port = Annotated[int, Field(ge=1, le=65535)]
