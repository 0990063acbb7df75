"""The server's listening sockets, bound before anything else starts: a port in use is one clear
error (``ListenError``) instead of a half-started server."""

from __future__ import annotations

import errno
import socket

from predictors.errors import ListenError


def listen(host: str, port: int, flag: str) -> socket.socket:
    """A TCP socket listening on ``host:port`` (port 0: any free port); ``flag`` names the setting
    to change when it cannot be had."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}; check --host") from None
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the listener's
    # protocol says TCP; without it every answer waits ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = (
            f"stop what listens there or choose another port with {flag}"
            if exc.errno == errno.EADDRINUSE
            else f"check --host and {flag}"
        )
        raise ListenError(f"cannot listen on {host}:{port} ({flag}): {exc.strerror}; {hint}") from None
    return sock


def check_free(host: str, port: int, flag: str) -> None:
    """Raise ``ListenError`` now if ``host:port`` cannot be listened on (for a server that binds
    its own socket later, as gRPC does)."""
    if port:
        listen(host, port, flag).close()
