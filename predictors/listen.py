"""The server's listening sockets, bound before anything else starts: a port in use is one clear
error (``ListenError``) instead of a half-started server; and, at shutdown, emptied before they
close (``refuse_new_connections``, ``accept_queue_length``, ``listening_sockets``)."""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import struct
import sys

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


# A classic BPF socket filter, run by Linux on every TCP segment the socket receives, with the TCP
# header at offset 0: drop a segment whose flags have SYN without ACK (a new connection attempt),
# keep every other. The client retransmits a dropped SYN (1 s later, then 2 s after that...) and is
# refused once the listener has closed; handshakes already under way complete (their final ACK is
# not a SYN). Each instruction: (opcode, jump if true, jump if false, operand).
_DROP_SYN = (
    (0x30, 0, 0, 13),  # load the byte at offset 13: the TCP flags
    (0x54, 0, 0, 0x12),  # and SYN|ACK
    (0x15, 1, 0, 0x02),  # equal to SYN alone: skip to drop
    (0x06, 0, 0, 0xFFFFFFFF),  # keep the whole segment
    (0x06, 0, 0, 0),  # drop it
)
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_TCPI_UNACKED = 24  # offset of tcpi_unacked in struct tcp_info: a listener's accept queue length


def refuse_new_connections(sock: socket.socket) -> bool:
    """Make a listening socket drop new connection attempts while it stays open, so that its
    accept queue can be emptied before it closes: closing a listener resets every connection still
    queued, requests already sent on them included. False where this cannot be done (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in _DROP_SYN))
    fprog = struct.pack("HP", len(_DROP_SYN), ctypes.addressof(program))  # struct sock_fprog
    try:  # the kernel copies the program: the buffer need only outlive the call
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def accept_queue_length(sock: socket.socket) -> int:
    """Connections the kernel has established on a listening socket that are not accepted yet
    (Linux; 0 where unknown)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return 0
    return int(struct.unpack_from("I", info, _TCPI_UNACKED)[0])


def listening_sockets(port: int) -> list[socket.socket]:
    """This process's TCP sockets listening on ``port``, as duplicates to close after use (Linux;
    none elsewhere): the gRPC server's, which its core opens and does not hand out."""
    if not port or not os.path.isdir("/proc/self/fd"):
        return []
    found = []
    seen = set()  # socket inodes: a duplicate made here may take a number still to be listed
    for name in os.listdir("/proc/self/fd"):
        try:
            info = os.fstat(int(name))
            if not stat.S_ISSOCK(info.st_mode) or info.st_ino in seen:
                continue
            seen.add(info.st_ino)
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue
        try:
            if (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                and sock.getsockname()[1] == port
            ):
                found.append(sock)
                continue
        except OSError:
            pass
        sock.close()
    return found
