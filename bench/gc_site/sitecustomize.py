"""Other GC thresholds for a platform under test by bench/scale.py (on that server's PYTHONPATH).

``PYTHONSCALE_GC_THRESHOLD=a,b,c`` sets the collector's thresholds in every process forked
from the server's master, i.e. its workers (after gunicorn_conf's own, which the master sets
before it forks). The master's freeze of its imports is the platform's own. The name starts
with PYTHON because `up` passes only those (and its own) variables to the server.
"""

from __future__ import annotations

import gc
import os

_threshold = os.environ.get("PYTHONSCALE_GC_THRESHOLD")
if _threshold:
    _values = tuple(int(part) for part in _threshold.split(","))
    os.register_at_fork(after_in_child=lambda: gc.set_threshold(*_values))
