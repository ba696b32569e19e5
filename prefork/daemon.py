# --daemon: the master detaches from the terminal and its session, and the
# process that launched it stays until the start has succeeded or failed, so
# that ``prefork --daemon`` exits 0 only for a server that is serving.
from __future__ import annotations

import os


class Launcher:
    """The link back to the process that ran ``prefork --daemon``: one byte,
    ``0`` (ready) or ``1`` (failed), then the pipe is closed."""

    def __init__(self) -> None:
        self.fd = -1  # not daemonized, or already told

    def daemonize(self) -> None:
        """Fork twice and start a new session; the launcher waits for ``tell``."""
        ready_r, ready_w = os.pipe()
        if os.fork():
            os.close(ready_w)
            status = b""
            try:
                status = os.read(ready_r, 1)
            finally:
                os._exit(0 if status == b"0" else 1)
        os.close(ready_r)
        os.setsid()
        if os.fork():
            os._exit(0)
        self.fd = ready_w
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)

    def tell(self, ready: bool) -> None:
        """The first call decides the launcher's exit status; later ones do nothing."""
        if self.fd < 0:
            return
        try:
            os.write(self.fd, b"0" if ready else b"1")
        finally:
            self.close()

    def close(self) -> None:
        """In a worker: the pipe is the master's."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
