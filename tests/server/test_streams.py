"""PulledReader: a file over chunks pulled one at a time, as request bodies arrive."""

from __future__ import annotations

from mlflow_stack.server.streams import PulledReader


class Chunks(PulledReader):
    def __init__(self, *chunks: bytes) -> None:
        super().__init__()
        self.chunks, self.pulls = list(chunks), 0

    def _pull(self) -> bytes | None:
        self.pulls += 1
        return self.chunks.pop(0) if self.chunks else None


def test_reads_fill_the_size_asked_across_chunks_and_stop_at_the_end() -> None:
    body = Chunks(b"ab", b"", b"cdef", b"g")
    assert body.read(3) == b"abc"
    assert body.read(0) == b""
    assert body.read(10) == b"defg"
    assert body.read(10) == b""
    pulls = body.pulls
    assert body.read() == b"" and body.pulls == pulls  # nothing pulled past the end


def test_read_all_readinto_and_lines() -> None:
    assert Chunks(b"x" * 5, b"y" * 3).read() == b"xxxxxyyy"
    buffer = bytearray(4)
    body = Chunks(b"12", b"345")
    assert body.readinto(buffer) == 4 and bytes(buffer) == b"1234"
    assert body.read() == b"5"
    lines = Chunks(b"one\ntw", b"o\nthree")
    assert lines.readline() == b"one\n"
    assert lines.readline(2) == b"tw"
    assert lines.readline() == b"o\n"
    assert lines.readline() == b"three"
    assert lines.readline() == b""
