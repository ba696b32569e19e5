# A listening socket as the master and the workers see it. The master creates
# listeners (prefork/sockets.py); workers only use them, so this lives below
# both layers.
from __future__ import annotations

import os
import socket
import sys

from .settings import Address


class Listener:
    """A listening socket and what it was made from."""

    def __init__(self, sock: socket.socket, address: Address, owned_path: str = "") -> None:
        self.sock = sock
        self.address = address
        # A unix socket file we created and must remove on exit, and its inode:
        # a file that another server has since put there is not ours to remove.
        self.owned_path = owned_path
        self._inode = _inode(owned_path) if owned_path else None

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def family(self) -> int:
        return self.sock.family

    def url(self) -> str:
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname() or self.address.path}"
        host, port = self.sock.getsockname()[:2]
        if self.sock.family == socket.AF_INET6:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.sock.close()

    def remove_file(self) -> None:
        if self.owned_path and _inode(self.owned_path) == self._inode:
            try:
                os.unlink(self.owned_path)
            except OSError:
                pass


def _inode(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


def needs_poll(listeners: list[Listener]) -> bool:
    """Whether workers must poll instead of blocking in accept().

    One listener on Linux: block in accept() (the kernel wakes one worker, and
    SO_RCVTIMEO bounds the wait). Several listeners, or another kernel where
    accept() may ignore SO_RCVTIMEO: the listeners are non-blocking and polled.
    """
    return len(listeners) > 1 or not sys.platform.startswith("linux")
