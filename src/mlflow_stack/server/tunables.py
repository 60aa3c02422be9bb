"""Numbers the server runtime reads from its environment (named in launch/command.py's
SERVER_TUNABLES, so a local server inherits them), and the collector thresholds it sets (here
so that bench/scale.py can read them without importing gunicorn_conf)."""

from __future__ import annotations

import os

# The collector's thresholds in the workers (gen0 allocations, gen1 and gen2 per younger pass),
# set by gunicorn_conf before it forks them. Python's (700, 10, 10) runs a full collection every
# ~70,000 net allocations; a search page of 100 runs builds ~4,100 ORM rows and their entities,
# protobufs and JSON (hundreds of thousands of objects), so with defaults ~40 % of such requests
# paid a full collection of the whole heap (+250-400 ms, bench/scale.py). Frozen imports plus
# these: 0.63x of the time. Young garbage lives a little longer (at most ~50,000 objects per
# worker).
GC_THRESHOLDS = (50_000, 20, 100)


def seconds(name: str, default: float) -> float:
    """``name`` as a non-negative number; ``default`` when unset or not a number."""
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default
