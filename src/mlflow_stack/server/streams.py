"""A readable file over chunks pulled one at a time (request bodies handed on as they arrive).

``PulledReader`` gives ``read``, ``readinto`` and ``readline`` over a subclass's ``_pull``:
the next chunk, or None at the end. Used for a request body read from the ASGI connection
(server/patches/flask_pool.py) and for one handed from the event loop to an upload thread
(server/s3_repository.py).
"""

from __future__ import annotations

import io
from typing import Any


class PulledReader(io.RawIOBase):
    def __init__(self) -> None:
        super().__init__()
        self._pending = b""
        self._ended = False

    def _pull(self) -> bytes | None:
        """The next chunk, or None when there is no more."""
        raise NotImplementedError

    def _more(self) -> bytes:
        chunk = None if self._ended else self._pull()
        if chunk is None:
            self._ended = True
            return b""
        return chunk

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        wanted = -1 if size is None else size
        parts, have = [self._pending], len(self._pending)
        while not self._ended and (wanted < 0 or have < wanted):
            chunk = self._more()
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if wanted < 0:
            self._pending = b""
            return data
        self._pending = data[wanted:]
        return data[:wanted]

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        wanted = -1 if size is None else size
        while b"\n" not in self._pending and not self._ended \
                and (wanted < 0 or len(self._pending) < wanted):
            self._pending += self._more()
        end = self._pending.find(b"\n") + 1 or len(self._pending)
        if wanted >= 0:
            end = min(end, wanted)
        line, self._pending = self._pending[:end], self._pending[end:]
        return line
