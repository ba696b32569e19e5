# The master's listening sockets, found once at start: passed by systemd's
# socket activation, inherited from the master a USR2 upgrade replaces, or
# bound from --bind. Also what the operator is told about them: one line per
# socket, and the warnings for --reuse-port where it cannot apply.
from __future__ import annotations

import os
import socket
import struct
import sys
from dataclasses import dataclass, field

from .heartbeat import beat_interval
from .logs import Logger
from .settings import Address, Config
from .sockets import BindError, Listener, adopt_fd, inherit_listeners, needs_poll, tune_listener
from .systemd import listen_fds

# The environment of a master started by a USR2 upgrade: the descriptors of
# the listening sockets it inherits (after ACTIVATED when they came from
# socket activation and are to be used as they are).
FDS_ENV = "PREFORK_FDS"
ACTIVATED = "activated:"


class BindingError(Exception):
    """The sockets cannot be had; the message is one line."""


@dataclass
class Bound:
    listeners: list[Listener] = field(default_factory=list)
    activated: bool = False  # from systemd: use them as they are, never unlink
    inherited: list[int] = field(default_factory=list)  # descriptors from an upgrade or systemd


def handover_env(listeners: list[Listener], activated: bool) -> str:
    """FDS_ENV for the new master of an upgrade."""
    return (ACTIVATED if activated else "") + ",".join(str(lst.fileno()) for lst in listeners)


def bind(cfg: Config, log: Logger, pid: int, tls: bool, owner: tuple[int, int]) -> Bound:
    """The listening sockets, ready for the workers; each one logged.

    ``owner`` (uid, gid; -1 leaves one unchanged) is given to unix socket
    files the master creates, so that a proxy running as the workers' user
    can connect, as Gunicorn does."""
    inherited = os.environ.pop(FDS_ENV, "")
    activated = inherited.startswith(ACTIVATED)
    fds = [int(fd) for fd in inherited.removeprefix(ACTIVATED).split(",") if fd.isdigit()]
    from_systemd = listen_fds(os.environ, pid)
    bound = Bound(inherited=fds)
    try:
        if from_systemd or activated:
            fds = fds or [fd for fd, _ in from_systemd]
            bound.inherited, bound.activated = fds, True
            bound.listeners = [adopt_fd(fd, Address("fd", fd=fd), cfg.backlog) for fd in fds]
            if cfg.sources.get("bind", "default") != "default":
                log.warning("Socket activation: using the sockets systemd passed; --bind is ignored")
        else:
            bound.listeners = inherit_listeners(fds, cfg.addresses, cfg.backlog, reuse_port(cfg))
    except BindError as exc:
        raise BindingError(str(exc)) from None
    _warn_shared(cfg, log, bound)
    set_timeouts(bound.listeners, cfg.timeout)
    poll = needs_poll(bound.listeners)
    for listener in bound.listeners:
        listener.sock.setblocking(not poll)
        if listener.owned_path and owner != (-1, -1):
            os.chown(listener.owned_path, *owner)
        kind = "socket activation" if bound.activated else (
            "inherited" if listener.fileno() in fds else "bound")
        if listener.per_worker:
            kind += ", a socket per worker"
        url = listener.url()
        if tls:
            url = url.replace("http://", "https://", 1)
        log.info("Listening at: %s (%s, %s)", url, pid, kind)
    return bound


def reuse_port(cfg: Config) -> bool:
    """Whether --reuse-port can take effect here at all."""
    return bool(cfg.reuse_port) and sys.platform.startswith("linux")


def set_timeouts(listeners: list[Listener], timeout: float) -> None:
    """How long a worker's accept(), read or write waits before it beats
    (accepted sockets inherit both timeouts from the listener)."""
    beat = beat_interval(timeout)
    seconds = int(beat)
    timeval = struct.pack("@ll", seconds, int((beat - seconds) * 1_000_000))
    for listener in listeners:
        tune_listener(listener.sock)
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        # A client that stops reading must not block a worker unseen.
        listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _warn_shared(cfg: Config, log: Logger, bound: Bound) -> None:
    """--reuse-port: one warning naming the listeners the workers share, and why."""
    if not cfg.reuse_port:
        return
    if not reuse_port(cfg):
        log.warning("--reuse-port: only Linux spreads connections across SO_REUSEPORT "
                    "sockets; the workers share the listening sockets")
        return
    reasons = []
    for listener in bound.listeners:
        if listener.per_worker:
            continue
        if bound.activated:
            why = "passed by socket activation, already listening"
        elif listener.address.kind == "unix":
            why = "a unix socket"
        elif listener.address.kind == "fd":
            why = "an fd:// socket, opened by another process"
        elif listener.fileno() in bound.inherited:
            why = "inherited already listening"
        else:
            why = "not a TCP socket"
        reasons.append(f"{listener.url()} ({why})")
    if reasons:
        log.warning("--reuse-port does not apply to %s: the workers share %s",
                    ", ".join(reasons), "it" if len(reasons) == 1 else "them")
    if any(listener.per_worker for listener in bound.listeners) and _migrate_req() != "1":
        log.warning("--reuse-port: net.ipv4.tcp_migrate_req is not 1, so connections "
                    "waiting for a worker that stops, crashes or times out are reset "
                    "(docs/deploy/scaling.md)")


def _migrate_req() -> str:
    """The sysctl net.ipv4.tcp_migrate_req (Linux 5.14+), or "" if unknown."""
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            return f.read().strip()
    except OSError:
        return ""
