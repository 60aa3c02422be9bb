"""free_port: bindable, and never a number an outgoing connection could take meanwhile."""

from __future__ import annotations

import socket

from harness.ports import _ephemeral_range, free_port


def test_free_ports_are_bindable_and_outside_the_ephemeral_range() -> None:
    low, high = _ephemeral_range()
    ports = {free_port() for _ in range(50)}
    assert len(ports) > 40  # spread, not one number handed to every caller
    for port in ports:
        assert not low <= port <= high, port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports.pop()))


def test_an_outgoing_connection_never_uses_a_port_free_port_gives() -> None:
    low, high = _ephemeral_range()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", free_port()))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            assert low <= client.getsockname()[1] <= high  # where the kernel puts clients
