# The systemd service protocol, written from sd_notify(3): a notification is
# one datagram of "KEY=VALUE" lines sent to the AF_UNIX socket named by
# NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). Without
# NOTIFY_SOCKET every call is a no-op, so the master can always call it.
from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    """Sends sd_notify messages; silent when not under a notify-aware supervisor."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        """Send the lines as one message; False if it could not be delivered."""
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.set_inheritable(False)
            self._sock.sendto("\n".join(lines).encode("utf-8"), self.address)
            return True
        except OSError:
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
