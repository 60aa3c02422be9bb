"""What a starting server is doing, read from its log while `up` waits for /health.

The first start on a new database creates MLflow's schema (and, with SSO, the SSO tables) before
any worker starts; every start then imports MLflow and the app once and forks the workers
(server/gunicorn_conf.py). Those are the slow parts; this turns the log lines that mark them
into short progress texts ("creating the database schema (first start only)",
"worker 2 of 2 ready").
"""

from __future__ import annotations

import re
from pathlib import Path

from mlflow_stack.server.gunicorn_conf import GC_LOG, ROUTES_LOG, STORES_LOG

# "2026/12/03 17:37:29 INFO mlflow.store.db.utils: Creating ..." (MLflow) and
# "2026/12/04 09:28:37 INFO: Listening at: http://..." (gunicorn and its uvicorn workers).
_RECORD = re.compile(
    r"^\d{4}[/-]\d\d[/-]\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?\s+(?P<level>[A-Z]+):?\s+"
    r"(?:(?P<logger>[\w.]+): )?(?P<msg>.*)$")
_MAX_TEXT = 70

# (pattern in the message, text to show); first match wins.
_KNOWN: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Creating initial MLflow database tables"),
     "creating the database schema (first start only)"),
    (re.compile(r"Updating database tables"), "bringing the database schema up to date"),
    (re.compile(r"Running upgrade \S+ -> \S+,?\s*(?P<what>.*)"), "migration: {what}"),
    (re.compile(r"Listening at: (?P<url>\S+)"), "listening on {url}; starting workers"),
    # server/gunicorn_conf.py: the parent prepares what the workers share before forking
    # (its warning that it could not, "stores: not before the fork ...", is no progress).
    (re.compile(rf"^{ROUTES_LOG}: \d+ included routers"), "preparing the app once for all workers"),
    (re.compile(rf"^{STORES_LOG}: tracking and model registry stores made"),
     "opening the tracking and registry stores"),
)
_WORKER_STARTED = re.compile(r"Started server process")
_WORKER_READY = re.compile(r"Application startup complete")
# Lines that say nothing about progress.
_NOISE = re.compile(r"Waiting for application startup|Starting gunicorn|Using worker:|"
                    rf"Booting worker|^worker \d+: {GC_LOG}|"
                    r"Registry store URI not provided|Security middleware|\"GET /health")


class StartupLog:
    """Follows a server log from `offset` (its size before the server was spawned)."""

    def __init__(self, path: Path, offset: int, workers: int) -> None:
        self.path = path
        self.offset = offset
        self.workers = workers
        self.started = 0
        self.ready = 0
        self._partial = ""

    def poll(self) -> list[str]:
        """Progress texts for the complete lines written since the last poll, in order."""
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                chunk = log.read()
        except OSError:
            return []
        self.offset += len(chunk)
        text = self._partial + chunk.decode(errors="replace")
        *lines, self._partial = text.split("\n")
        found = [t for t in (self.describe(line) for line in lines) if t]
        return [t for i, t in enumerate(found) if i == 0 or t != found[i - 1]]

    def describe(self, line: str) -> str | None:
        """The progress text of one log line; None for lines that tell nothing."""
        match = _RECORD.match(line.rstrip())
        if match is None:  # warnings' source lines, tracebacks' continuation lines
            return None
        level, msg = match["level"], match["msg"].strip()
        # "stores: ..." (gunicorn_conf) reads as a logger's name: the patterns see the whole line.
        whole = f"{match['logger']}: {msg}" if match["logger"] else msg
        if _WORKER_STARTED.search(msg):
            self.started += 1
            return f"worker {self.started} of {self.workers} starting"
        if _WORKER_READY.search(msg):
            self.ready += 1
            return f"worker {self.ready} of {self.workers} ready"
        for pattern, template in _KNOWN:
            found = pattern.search(whole)
            if found:
                return _short(template.format(**found.groupdict()))
        if _NOISE.search(whole) or level in ("DEBUG", "WARNING"):
            return None
        return _short(f"{level.lower()}: {msg}" if level in ("ERROR", "CRITICAL") else msg)


def _short(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT - 1] + "…"
