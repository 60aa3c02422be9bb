"""GC tuning for a server under test by bench/scale.py (on PYTHONPATH of that server only).

``PYTHONSCALE_GC_THRESHOLD=a,b,c`` sets gc thresholds at interpreter start;
``PYTHONSCALE_GC_FREEZE=1`` collects and then freezes (gc.freeze) everything alive once the
process has finished importing (the module count has been still for 2 s after
``mlflow.server.handlers`` is loaded), so that full collections no longer walk the hundreds of
thousands of objects MLflow's imports leave. Each uvicorn worker is a fresh interpreter and
runs this too. The names start with PYTHON because `up` passes only those (and its own)
variables to the server.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

_threshold = os.environ.get("PYTHONSCALE_GC_THRESHOLD")
if _threshold:
    gc.set_threshold(*(int(part) for part in _threshold.split(",")))


def _freeze_when_loaded() -> None:
    last = -1
    while True:
        time.sleep(2.0)
        count = len(sys.modules)
        if count == last and "mlflow.server.handlers" in sys.modules:
            gc.collect()
            gc.freeze()
            return
        last = count


if os.environ.get("PYTHONSCALE_GC_FREEZE"):
    threading.Thread(target=_freeze_when_loaded, name="scale-gc-freeze", daemon=True).start()
