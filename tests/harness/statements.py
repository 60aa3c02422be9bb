"""The SQL statements an SQLAlchemy engine sends, recorded while a block runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event


@contextlib.contextmanager
def statements_sent(engine: Any) -> Iterator[list[str]]:
    """A list that receives each statement ``engine`` sends inside the ``with`` block."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
