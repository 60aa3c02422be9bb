"""The token cache file every thread and process of a user shares.

JSON, mode 0600 in a 0700 directory, replaced atomically; writers hold an exclusive ``flock`` on
a sidecar lock file. One entry per identity (stored login, service account, user with a
password); a stored login keeps its refresh token here until ``logout``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlflow_stack.client.oidc import ENV_CACHE, KeycloakClient, TokenConfigError, TokenSet

log = logging.getLogger(__name__)

SourceKind = Literal["login", "client_credentials", "password"]


def cache_key(kind: SourceKind, client: KeycloakClient, username: str | None = None) -> str:
    """One entry per identity; no secret goes into the key."""
    parts = [kind, client.token_url.rstrip("/"), client.client_id]
    if kind == "password":
        parts.append(username or "")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def default_cache_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "mlflow-stack" / "keycloak-tokens.json"


def cache_path_from_env(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    value = env.get(ENV_CACHE)
    return Path(value).expanduser() if value else default_cache_path()



@dataclass
class CacheEntry:
    kind: SourceKind
    token_url: str
    client_id: str
    tokens: TokenSet
    ca_bundle: str | None = None
    # Logins only: the secret of a confidential login client, needed for every refresh. It is
    # kept beside the refresh token, which is the more powerful credential of the two.
    client_secret: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "token_url": self.token_url, "client_id": self.client_id,
                "ca_bundle": self.ca_bundle, "client_secret": self.client_secret,
                "tokens": self.tokens.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CacheEntry:
        return cls(kind=data["kind"], token_url=str(data["token_url"]),
                   client_id=str(data["client_id"]), ca_bundle=data.get("ca_bundle"),
                   client_secret=data.get("client_secret"),
                   tokens=TokenSet.from_json(data["tokens"]))


@dataclass
class CacheData:
    entries: dict[str, CacheEntry] = field(default_factory=dict)
    default_login: str | None = None  # key of the most recent login

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "default_login": self.default_login,
                "entries": {k: e.to_json() for k, e in self.entries.items()}}

    @classmethod
    def from_json(cls, data: Any) -> CacheData:
        result = cls()
        if not isinstance(data, dict) or data.get("version") != 1:
            return result
        for key, raw in (data.get("entries") or {}).items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                result.entries[str(key)] = CacheEntry.from_json(raw)
        default = data.get("default_login")
        if default in result.entries:
            result.default_login = default
        return result


class TokenCache:
    """The shared token file: JSON, mode 0600 in a 0700 directory, replaced atomically.

    Writers hold an exclusive `flock` on a sidecar lock file (not on the data file, which is
    replaced by rename). Readers without the lock always see a complete file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._thread_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"TokenCache({str(self.path)!r})"

    def _check_owner(self, path: Path) -> None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        if st.st_uid != os.getuid():
            raise TokenConfigError(f"token cache {path} belongs to another user (uid {st.st_uid})",
                                   hint=f"remove it, or set {ENV_CACHE} to a file of yours")
        if st.st_mode & 0o077:
            os.chmod(path, 0o600)  # someone loosened it; tokens are credentials

    def read(self) -> CacheData:
        self._check_owner(self.path)
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return CacheData()
        except OSError as exc:
            raise TokenConfigError(f"cannot read token cache {self.path}: {exc}",
                                   hint=f"fix its permissions or set {ENV_CACHE}") from exc
        try:
            return CacheData.from_json(json.loads(text))
        except ValueError:
            log.warning("token cache %s is not valid JSON; starting a new one", self.path)
            return CacheData()

    def _write(self, data: CacheData) -> None:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = directory / f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data.to_json(), handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[CacheData]:
        """Exclusive access across threads and processes; changes to the data are saved."""
        with self._thread_lock:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise TokenConfigError(f"cannot create token cache in {self.path.parent}: {exc}",
                                       hint=f"set {ENV_CACHE} to a writable path") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                data = self.read()
                before = json.dumps(data.to_json(), sort_keys=True)
                try:
                    yield data
                finally:
                    # Saved even when the caller raises: e.g. a login Keycloak refused is
                    # removed and then reported.
                    if json.dumps(data.to_json(), sort_keys=True) != before:
                        self._write(data)
            finally:
                os.close(fd)  # closing releases the flock

    def find_login(self, token_url: str | None = None,
                   client_id: str | None = None) -> KeycloakClient | None:
        """The stored login for token_url (same client preferred), or the most recent one."""
        data = self.read()
        logins = {k: e for k, e in data.entries.items() if e.kind == "login"}
        if token_url:
            wanted = token_url.rstrip("/")
            matches = [e for e in logins.values() if e.token_url.rstrip("/") == wanted]
            matches.sort(key=lambda e: e.client_id != client_id)
            entry = matches[0] if matches else None
        else:
            entry = logins.get(data.default_login or "")
        if entry is None:
            return None
        return KeycloakClient(entry.token_url, entry.client_id, entry.client_secret,
                              entry.ca_bundle)


def store_login(cache: TokenCache, client: KeycloakClient, tokens: TokenSet) -> None:
    """Keep a login's tokens (refresh token included) and make it the default login."""
    key = cache_key("login", client)
    with cache.locked() as data:
        data.entries[key] = CacheEntry("login", client.token_url, client.client_id,
                                                    tokens, client.ca_bundle,
                                                    client.client_secret)
        data.default_login = key


def remove_login(cache: TokenCache, client: KeycloakClient) -> TokenSet | None:
    """Delete a stored login; returns its tokens (for revocation) or None if there was none."""
    key = cache_key("login", client)
    with cache.locked() as data:
        entry = data.entries.pop(key, None)
        if data.default_login == key:
            others = [k for k, e in data.entries.items() if e.kind == "login"]
            data.default_login = others[-1] if others else None
    return entry.tokens if entry is not None else None
