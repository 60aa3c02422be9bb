"""Numbers the server runtime reads from its environment (named in launch/command.py's
SERVER_TUNABLES, so a local server inherits them)."""

from __future__ import annotations

import os


def seconds(name: str, default: float) -> float:
    """``name`` as a non-negative number; ``default`` when unset or not a number."""
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default
