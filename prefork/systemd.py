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
                # Never wait for the supervisor: a message it is too slow to
                # take is dropped, and the main loop goes on.
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode("utf-8"), self.address)
            return True
        except OSError:
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


SD_LISTEN_FDS_START = 3


def listen_fds(env: dict[str, str] | os._Environ[str], pid: int) -> list[tuple[int, str]]:
    """Sockets passed by systemd socket activation (sd_listen_fds(3)).

    Returns ``(fd, name)`` pairs, and removes LISTEN_PID, LISTEN_FDS and
    LISTEN_FDNAMES from ``env`` so that no child process mistakes them for its own.
    """
    listen_pid = env.pop("LISTEN_PID", "")
    count = env.pop("LISTEN_FDS", "")
    names = env.pop("LISTEN_FDNAMES", "")
    if not listen_pid.isdigit() or int(listen_pid) != pid or not count.isdigit():
        return []
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count))
    labels = names.split(":") if names else []
    return [(fd, labels[i] if i < len(labels) else "unknown") for i, fd in enumerate(fds)]


def watchdog_interval(env: dict[str, str] | os._Environ[str], pid: int) -> float:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or 0 when off."""
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return 0.0
    if owner and (not owner.isdigit() or int(owner) != pid):
        return 0.0
    return int(usec) / 1_000_000 / 2
