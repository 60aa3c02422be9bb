"""MLflow's own app, for a platform without SSO, with the platform's choices applied.

Registered as the ``mlflow.app`` entry point ``mlflow-stack`` (``mlflow server --app-name
mlflow-stack``, what build_server_launch passes when ``auth.provider: none``). Without it the
server would be plain MLflow, and what the SSO app does beyond authentication would be missing:
the Assistant's routes (a shell on the server host for any client that looks local, e.g. behind
a same-host proxy) and the AI Gateway answer 404 unless turned on (server/surfaces.py); request
bodies, request heads and idle bodies are bounded, the Host header is parsed strictly, and bad
artifact paths are refused without internals in errors (server/hardening.py); exactly
``GET /metrics`` passes MLflow's Host check, so Prometheus can scrape by pod IP
(server/patches/metrics_scrape.py, as on the SSO app). API responses are compact JSON
(server/patches/compact_json.py) and read-only store sessions keep what they loaded at commit
(server/patches/read_sessions.py), and ``runs/search`` is answered from rows without ORM
entities or protobufs (server/patches/fast_runs_search.py), and so are metric history, the
charts' bulk-interval call and artifact listings (server/patches/fast_reads.py) and the
registry searches (server/patches/fast_registry.py), search filters and orderings are parsed
once per text (server/patches/parse_cache.py), and
downloads through the server stream from S3 without a temporary copy
(server/patches/stream_downloads.py), and a pooled database connection is pinged only after
it sat idle (server/patches/idle_ping.py), as on the SSO app. MLflow's gateway-timing and
workspace layers step aside for requests they do nothing for (server/idle_layers.py), and
Flask's responses come back from its thread in one piece (server/wsgi_bridge.py).
"""

from __future__ import annotations

from mlflow_stack.server.patches import idle_ping, read_sessions

read_sessions.apply()  # before MLflow's app is imported: no store may exist without it
idle_ping.apply_mlflow()  # the same: engines ping a connection only after it sat idle

from mlflow.server.fastapi_app import app  # noqa: E402

from mlflow_stack.server import (  # noqa: E402
    db_metrics,
    hardening,
    idle_layers,
    surfaces,
    wsgi_bridge,
)
from mlflow_stack.server.patches import (  # noqa: E402
    compact_json,
    fast_reads,
    fast_registry,
    fast_runs_search,
    flask_first,
    metrics_scrape,
    parse_cache,
    stream_downloads,
)

compact_json.apply_mlflow()  # the handlers module this app serves the API with
fast_runs_search.apply()  # runs/search from rows, on MLflow's Flask app
fast_reads.apply()  # metric history, bulk interval, artifact listing: the same
fast_registry.apply()  # registry searches from rows, on MLflow's registry store
parse_cache.apply()  # search filters and orderings parsed once per text
stream_downloads.apply(app)  # downloads stream from S3: its Flask view and FastAPI routes
metrics_scrape.apply(app)  # MLflow's own Host check middleware is on the app already
hardening.install(app, sso=False)
surfaces.install(app, sso=False)
db_metrics.install()  # mlflow_db_connection_errors_total on /metrics
idle_layers.install(app)  # MLflow's gateway and workspace layers pass idle requests on
wsgi_bridge.install(app)  # Flask's responses reach the loop in one piece, not per message
flask_first.apply_mlflow(app)  # Flask's paths not matched against every FastAPI route first

__all__ = ["app"]
