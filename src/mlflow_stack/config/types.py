"""Constrained value types of the config model, each with an error that says what is expected."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
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


@dataclass(frozen=True)
class NameRule:
    """A name rule of Kubernetes (k8s.io/apimachinery/pkg/util/validation) or Helm, worded for
    error messages. The API server enforces the same rule, so a name refused here would
    otherwise fail half-way through an apply."""

    pattern: re.Pattern[str]
    max_length: int
    description: str
    lower_case: bool = True  # rules without capitals get a "use 'x'" hint for a capitalised name
    prefixed: bool = False  # label keys: an optional "<RFC 1123 subdomain>/" before the name

    def matches(self, value: str) -> bool:
        if self.prefixed:
            prefix, slash, name = value.partition("/")
            if slash:
                return RFC1123_SUBDOMAIN.matches(prefix) and _QUALIFIED.matches(name)
        return len(value) <= self.max_length and self.pattern.fullmatch(value) is not None


_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"

RFC1123_LABEL = NameRule(
    re.compile(_DNS1123_LABEL), 63,
    "an RFC 1123 label: at most 63 lower-case letters, digits or '-', starting and ending with "
    "a letter or digit",
)
RFC1123_SUBDOMAIN = NameRule(
    re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*"), 253,
    "an RFC 1123 subdomain: at most 253 lower-case letters, digits, '-' or '.', starting and "
    "ending with a letter or digit",
)
# Helm's rule for release names: shorter, because the chart's objects get suffixes.
HELM_RELEASE = NameRule(
    RFC1123_SUBDOMAIN.pattern, 53,
    "Helm's rule: at most 53 lower-case letters, digits, '-' or '.', starting and "
    "ending with a letter or digit",
)
_QUALIFIED = NameRule(re.compile(_QUALIFIED_NAME), 63, "", lower_case=False)
LABEL_KEY = NameRule(
    _QUALIFIED.pattern, 63,
    "a label key: an optional prefix (an RFC 1123 subdomain of at most 253 characters) and '/', "
    "then a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a "
    "letter or digit",
    lower_case=False, prefixed=True,
)
LABEL_VALUE = NameRule(
    re.compile(f"({_QUALIFIED_NAME})?"), 63,
    "a label value: empty, or at most 63 letters, digits, '-', '_' or '.', starting and ending "
    "with a letter or digit",
    lower_case=False,
)


def check_name(value: str, rule: NameRule, kind: str) -> str:
    """`value` if it is a valid `kind` (e.g. "Secret name") by `rule`; else a ValueError that
    names the rule and, when it is clear, the fix."""
    if rule.matches(value):
        return value
    hint = ""
    if len(value) > rule.max_length and not rule.prefixed:
        hint = f" (it has {len(value)} characters)"
    elif rule.lower_case and rule.matches(value.lower()):
        hint = f" (Kubernetes names are lower case: use {value.lower()!r})"
    raise ValueError(f"{value!r} is not a valid {kind}: expected {rule.description}{hint}")


def _named(rule: NameRule, kind: str) -> AfterValidator:
    return AfterValidator(lambda value: check_name(value, rule, kind))


Hostname = Annotated[str, AfterValidator(check_hostname)]
HttpUrlStr = Annotated[str, AfterValidator(check_http_url)]
Quantity = Annotated[
    str, BeforeValidator(lambda v: str(v) if isinstance(v, int | float) else v),
    AfterValidator(check_quantity),
]
BucketName = Annotated[str, AfterValidator(check_bucket)]
PgIdentifier = Annotated[str, AfterValidator(check_pg_identifier)]
Port = Annotated[int, Field(ge=1, le=65535)]

# Values that become Kubernetes object names or references, each held to the rule the API
# server applies to that kind of name.
NamespaceName = Annotated[str, _named(RFC1123_LABEL, "Kubernetes namespace name")]
SecretName = Annotated[str, _named(RFC1123_SUBDOMAIN, "Kubernetes Secret name")]
ConfigMapName = Annotated[str, _named(RFC1123_SUBDOMAIN, "Kubernetes ConfigMap name")]
StorageClassName = Annotated[str, _named(RFC1123_SUBDOMAIN, "Kubernetes StorageClass name")]
IngressClassName = Annotated[str, _named(RFC1123_SUBDOMAIN, "Kubernetes IngressClass name")]
PvcName = Annotated[str, _named(RFC1123_SUBDOMAIN, "Kubernetes PersistentVolumeClaim name")]
DeploymentName = Annotated[str, _named(RFC1123_SUBDOMAIN, "Kubernetes Deployment name")]
GatewayName = Annotated[str, _named(RFC1123_SUBDOMAIN, "Gateway API Gateway name")]
PriorityClassName = Annotated[str, _named(RFC1123_SUBDOMAIN, "Kubernetes PriorityClass name")]
ContainerName = Annotated[str, _named(RFC1123_LABEL, "Kubernetes container name")]
HelmReleaseName = Annotated[str, _named(HELM_RELEASE, "Helm release name")]
LabelKey = Annotated[str, _named(LABEL_KEY, "Kubernetes label key")]
LabelValue = Annotated[str, _named(LABEL_VALUE, "Kubernetes label value")]
