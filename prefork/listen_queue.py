# How many connections wait in a listening socket's accept queue, and the
# queue's limit, as the kernel counts them (Linux; elsewhere: nothing, rather
# than a wrong number).
#
# * A TCP socket the master holds: ``getsockopt(TCP_INFO)``. On a listening
#   socket ``tcpi_unacked`` is the queue's length and ``tcpi_sacked`` its limit
#   (what ``ss -lt`` shows as Recv-Q and Send-Q).
# * A unix socket: a ``NETLINK_SOCK_DIAG`` dump of listening unix sockets with
#   ``UDIAG_SHOW_RQLEN``, matched on the socket's inode. Without netlink (a
#   seccomp filter, an old kernel) the queue's length is counted in
#   /proc/net/unix, whose not-yet-accepted connections carry the listener's
#   path and no inode; the limit is then unknown.
# * --reuse-port: each worker listens on a socket of its own, which the master
#   does not hold. A ``NETLINK_SOCK_DIAG`` dump of listening TCP sockets gives
#   every socket's queue and inode; the inodes of each worker's sockets come
#   from /proc/PID/fd.
from __future__ import annotations

import os
import socket
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass

LINUX = sys.platform.startswith("linux")

_TCP_INFO = struct.Struct("8B24I")
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_LISTEN = 10
_UDIAG_SHOW_RQLEN = 0x10
_UNIX_DIAG_RQLEN = 4
_NLMSG = struct.Struct("=IHHII")
_UNIX_REQ = struct.Struct("=BBHIII2I")
_UNIX_MSG = struct.Struct("=BBBBI2I")
_RTATTR = struct.Struct("=HH")
_RQLEN = struct.Struct("=II")
_INET_REQ = struct.Struct("=BBBBI48x")
_INET_MSG = struct.Struct("=BBBB2H16s16sI2IIIIII")
_PORT = struct.Struct("!H")
NETLINK_TIMEOUT = 0.5


@dataclass(frozen=True)
class QueueFigures:
    """One accept queue: ``length`` connections wait; ``limit`` is None if unknown."""

    length: int
    limit: int | None

    @property
    def full(self) -> bool:
        return self.limit is not None and self.length >= self.limit


def socket_inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def tcp_queue(sock: socket.socket) -> QueueFigures | None:
    """The accept queue of a listening TCP socket, or None where it is not known."""
    if not LINUX or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    except OSError:
        return None
    if len(info) < _TCP_INFO.size:
        return None
    fields = _TCP_INFO.unpack(info)
    if fields[0] != _TCP_LISTEN:  # tcpi_state: the counters mean this only when listening
        return None
    return QueueFigures(fields[12], fields[13])


def unix_queues(inodes: Iterable[int], paths: dict[int, str] | None = None) -> dict[int, QueueFigures]:
    """The accept queues of listening unix sockets, by inode; ``paths`` (inode
    -> socket path) lets /proc/net/unix stand in when netlink is unavailable."""
    wanted = set(inodes)
    if not LINUX or not wanted:
        return {}
    try:
        return {ino: q for ino, q in _unix_diag().items() if ino in wanted}
    except OSError:
        pass
    if not paths:
        return {}
    return _proc_net_unix({ino: path for ino, path in paths.items() if ino in wanted})


def tcp_queues_by_inode(inodes: Iterable[int]) -> dict[int, tuple[int, QueueFigures]]:
    """The local port and accept queue of listening TCP sockets (IPv4 and
    IPv6), by inode."""
    wanted = set(inodes)
    if not LINUX or not wanted:
        return {}
    found: dict[int, tuple[int, QueueFigures]] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            found.update((ino, q) for ino, q in _inet_diag(family).items() if ino in wanted)
        except OSError:
            continue
    return found


def process_socket_inodes(pid: int) -> set[int]:
    """The inodes of every socket process ``pid`` holds open (empty if unreadable)."""
    base = f"/proc/{pid}/fd"
    inodes: set[int] = set()
    try:
        names = os.listdir(base)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


# --- NETLINK_SOCK_DIAG


def _dump(request: bytes) -> list[bytes]:
    """Send one sock_diag dump request; return the payload of every answer."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(NETLINK_TIMEOUT)
        nl.send(_NLMSG.pack(_NLMSG.size + len(request), _SOCK_DIAG_BY_FAMILY,
                            _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + request)
        messages: list[bytes] = []
        while True:
            data = nl.recv(1 << 16)
            if not data:
                return messages
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, kind = _NLMSG.unpack_from(data, offset)[:2]
                if kind == _NLMSG_DONE:
                    return messages
                if kind == _NLMSG_ERROR or length < _NLMSG.size:
                    raise OSError("sock_diag refused the request")
                messages.append(data[offset + _NLMSG.size:offset + length])
                offset += (length + 3) & ~3


def _unix_diag() -> dict[int, QueueFigures]:
    request = _UNIX_REQ.pack(socket.AF_UNIX, 0, 0, 1 << _TCP_LISTEN, 0, _UDIAG_SHOW_RQLEN, 0, 0)
    result = {}
    for message in _dump(request):
        inode = _UNIX_MSG.unpack_from(message)[4]
        offset = _UNIX_MSG.size
        while offset + _RTATTR.size <= len(message):
            length, kind = _RTATTR.unpack_from(message, offset)
            if length < _RTATTR.size:
                break
            if kind == _UNIX_DIAG_RQLEN:
                pending, limit = _RQLEN.unpack_from(message, offset + _RTATTR.size)
                result[inode] = QueueFigures(pending, limit)
            offset += (length + 3) & ~3
    return result


def _inet_diag(family: int) -> dict[int, tuple[int, QueueFigures]]:
    request = _INET_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN)
    result = {}
    for message in _dump(request):
        fields = _INET_MSG.unpack_from(message)
        pending, limit, inode = fields[12], fields[13], fields[15]
        port = _PORT.unpack_from(message, 4)[0]  # idiag_sport, in network order
        result[inode] = (port, QueueFigures(pending, limit))
    return result


def _proc_net_unix(paths: dict[int, str]) -> dict[int, QueueFigures]:
    """Count the connections waiting on each path: entries that carry the
    listener's path, no inode (not accepted yet) and the state "connecting"."""
    by_path = {path: ino for ino, path in paths.items()}
    counts = dict.fromkeys(paths, 0)
    try:
        with open("/proc/net/unix") as f:
            next(f, None)
            for line in f:
                fields = line.split(None, 7)
                if len(fields) == 8 and fields[6] == "0" and fields[5] == "02":
                    ino = by_path.get(fields[7].rstrip("\n"))
                    if ino is not None:
                        counts[ino] += 1
    except OSError:
        return {}
    return {ino: QueueFigures(count, None) for ino, count in counts.items()}
