"""Free loopback ports for services started by the harness."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in _EPHEMERAL.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, outside the kernel's ephemeral
    range. A port the OS hands out for ``bind(0)`` is an ephemeral one, which any outgoing
    connection may take as its local port while a test still holds the number (a server
    stopped and started again on it, a config written before the server starts): the server's
    bind then fails with "already in use". Below the range no outgoing connection gets it."""
    low, high = _ephemeral_range()
    first, last = (10_000, low - 1) if low > 12_000 else (high + 1, 65_535)
    for _ in range(500):
        port = random.randint(first, last)
        if _bindable(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # every try was taken
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    """True once something accepts TCP connections on host:port, False after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False
