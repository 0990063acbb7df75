"""The listening sockets the server binds up front."""

from __future__ import annotations

import asyncio
import socket

import pytest

from predictors.errors import ListenError
from predictors.listen import listen


async def test_accepted_connections_send_without_delay() -> None:
    """asyncio turns Nagle's algorithm off only on connections accepted from an IPPROTO_TCP
    listener; with it on, each answer waited ~40 ms for the client's delayed ACK."""
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accepted(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nodelay.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    sock = listen("127.0.0.1", 0, "--http_port")
    server = await asyncio.start_server(accepted, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        assert await asyncio.wait_for(nodelay, 10) != 0
        writer.close()


def test_a_port_in_use_names_the_flag() -> None:
    taken = listen("127.0.0.1", 0, "--http_port")
    try:
        with pytest.raises(ListenError, match="--grpc_port"):
            listen("127.0.0.1", taken.getsockname()[1], "--grpc_port")
    finally:
        taken.close()
