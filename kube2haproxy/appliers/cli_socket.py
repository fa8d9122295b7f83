"""cli_socket: one command on one of HAProxy's UNIX stream sockets, its answer read to the end.

The master CLI of 2.6 keeps a connection open until the client half-closes its write side;
the worker's stats socket closes on its own. The only code that opens those sockets.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Generator, Iterator

from kube2haproxy.errors import HAProxyUnavailable

READ_CHUNK = 65536


def unix_command(path: str, command: str, *, timeout_s: float, half_close: bool) -> str:
    """Send one command line to a UNIX stream socket and read the answer until the peer closes.

    `half_close` shuts our write side down after the command: the 2.6 master CLI waits for it
    before it answers and closes; the worker's stats socket closes on its own. The whole
    exchange takes at most `timeout_s`; HAProxyUnavailable otherwise."""
    chunks = unix_chunks(path, command, timeout_s=timeout_s, half_close=half_close)
    return b"".join(chunks).decode("utf-8", "replace")


def unix_lines(path: str, command: str, *, timeout_s: float) -> Generator[str, None, None]:
    """The answer of a worker's stats socket to one command, line by line as it arrives (no
    line ends), without holding it all: a dump of 160,000 lines is read and parsed in pieces.
    `timeout_s` bounds each wait for the socket, not the whole exchange: the reader may take
    its time between pieces."""
    rest = b""
    chunks = unix_chunks(path, command, timeout_s=timeout_s, half_close=False, idle=True)
    for chunk in chunks:
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            yield from data[: cut - 1].decode("utf-8", "replace").split("\n")
    if rest:
        yield rest.decode("utf-8", "replace")


def unix_chunks(
    path: str, command: str, *, timeout_s: float, half_close: bool, idle: bool = False
) -> Iterator[bytes]:
    """The answer as it arrives, in the chunks the socket gives (unix_command's terms; `idle`:
    `timeout_s` bounds each wait instead)."""
    deadline = time.monotonic() + timeout_s
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            while True:
                if not idle:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                data = sock.recv(READ_CHUNK)
                if not data:
                    break
                yield data
    except (OSError, TimeoutError) as exc:
        raise HAProxyUnavailable(f"{path}: {command.split(maxsplit=1)[0]!r}: {exc}") from exc


def split_replies(text: str) -> list[str]:
    """The replies of a batch (`a; b; c` on one line): each is its text followed by an empty
    line (an empty reply is the empty line alone)."""
    if not text.endswith("\n"):
        return [text] if text else []
    replies, current = [], []
    for line in text[:-1].split("\n"):
        if line:
            current.append(line)
        else:
            replies.append("\n".join(current))
            current = []
    if current:
        replies.append("\n".join(current))
    return replies
