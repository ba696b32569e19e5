# The control socket (--control-socket): a unix socket on which the master
# takes one command per connection from ``preforkctl`` and answers one JSON
# object. The commands follow Gunicorn's ``gunicornc`` where the same thing
# exists. Only a client running as the master's user, or as root, is served:
# the kernel tells the master the peer's uid (SO_PEERCRED), whatever the
# socket file's mode lets connect. Commands run in the master's loop like
# signals do, so they need no lock; each reply is written without blocking.
#
# Protocol: the client sends the command as one line of UTF-8 text, ending
# with "\n"; the master answers {"ok": true, "command": ..., "data": ...} or
# {"ok": false, "error": "one line"} and closes the connection.
from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any, Protocol

from .endpoint import Endpoint
from .logs import Logger
from .stats import ServerView

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
SHOW = ("workers", "stats", "listeners", "config")


class CommandError(Exception):
    """A command that cannot be run; the message is one line for the client."""


class Controlled(Protocol):
    """What the control socket needs from the master."""

    def view(self) -> ServerView: ...
    def config_rows(self) -> list[dict[str, Any]]: ...
    def uptime(self) -> float: ...
    def workers_wanted(self) -> int: ...
    def set_workers(self, count: int) -> int: ...  # returns the previous count
    def kill_worker(self, pid: int) -> bool: ...
    def reload(self) -> None: ...
    def reopen(self) -> None: ...
    def shutdown(self, graceful: bool) -> None: ...


HELP = {
    "show workers": "each worker: pid, state, age, requests served, memory, requests in progress",
    "show stats": "request counts, latency, workers by state, restarts, timeouts",
    "show listeners": "each listening socket and its kernel accept queue",
    "show config": "every setting, its value and where the value came from",
    "worker add [N]": "run N (default 1) more workers",
    "worker remove [N]": "run N (default 1) fewer workers (at least 1 stays)",
    "worker kill PID": "replace worker PID, gracefully (it finishes its requests)",
    "reload": "reload the configuration and the application (as HUP)",
    "reopen": "reopen the log files (as USR1)",
    "shutdown [graceful|quick]": "stop the server (graceful: as TERM, quick: as INT)",
    "help": "this list",
}


class Commands:
    """The commands, by name; each returns JSON-ready data or raises CommandError."""

    def __init__(self, server: Controlled) -> None:
        self.server = server

    def run(self, text: str) -> Any:
        words = text.split()
        if not words:
            raise CommandError("empty command (try: help)")
        verb, args = words[0].lower(), words[1:]
        if verb == "show" and args and args[0].lower() in SHOW and len(args) == 1:
            return getattr(self, f"show_{args[0].lower()}")()
        if verb == "worker" and args and args[0].lower() in ("add", "remove", "kill"):
            return getattr(self, f"worker_{args[0].lower()}")(args[1:])
        handler: Callable[[list[str]], Any] | None = {
            "reload": self.reload, "reopen": self.reopen, "shutdown": self.shutdown,
            "help": self.help,
        }.get(verb)
        if handler is None:
            raise CommandError(f"unknown command {text.strip()!r} (try: help)")
        return handler(args)

    # --- show

    def show_workers(self) -> dict[str, Any]:
        view = self.server.view()
        rows = []
        for worker in view.workers:
            rss, pss = view.memory.get(worker.pid, (None, None))
            rows.append({
                "pid": worker.pid, "state": worker.state, "age": round(worker.age, 3),
                "requests": worker.requests, "generation": worker.generation,
                "threads": worker.threads, "rss": rss, "pss": pss,
                "in_progress": [{"thread": r.thread, "method": r.method, "path": r.path,
                                 "age": round(r.age, 3)} for r in worker.in_flight],
            })
        return {"workers": rows, "wanted": view.wanted_workers}

    def show_stats(self) -> dict[str, Any]:
        view = self.server.view()
        totals = view.totals
        states = {"booting": 0, "idle": 0, "busy": 0}
        for worker in view.workers:
            states[worker.state] = states.get(worker.state, 0) + 1
        by_code: dict[str, int] = {}
        for (code, _), count in totals.requests().items():
            by_code[code] = by_code.get(code, 0) + count
        answered = totals.answered
        return {
            "master": os.getpid(),
            "phase": view.phase,
            "uptime": round(self.server.uptime(), 3),
            "generation": view.generation,
            "workers": {**states, "total": len(view.workers), "wanted": view.wanted_workers},
            "requests": answered,
            "requests_by_code": dict(sorted(by_code.items())),
            "requests_in_progress": sum(w.busy_threads for w in view.workers),
            "duration_seconds": {"sum": round(totals.duration_sum, 6),
                                 "mean": round(totals.duration_sum / answered, 6) if answered else None},
            "request_timeouts": view.timeouts,
            "parse_errors": dict(sorted(totals.rejected().items())),
            "restarts": dict(view.restarts),
            "listen_queue": sum(lv.queue.length for lv in view.listeners if lv.queue is not None),
        }

    def show_listeners(self) -> dict[str, Any]:
        rows = []
        for listener in self.server.view().listeners:
            queue = listener.queue
            rows.append({"listener": listener.name, "pid": listener.pid or None,
                         "queue": queue.length if queue else None,
                         "max": queue.limit if queue else None})
        return {"listeners": rows}

    def show_config(self) -> dict[str, Any]:
        return {"settings": self.server.config_rows()}

    # --- workers

    def worker_add(self, args: list[str]) -> dict[str, Any]:
        count = _count(args)
        previous = self.server.set_workers(self.server.workers_wanted() + count)
        return {"added": count, "previous": previous, "total": previous + count}

    def worker_remove(self, args: list[str]) -> dict[str, Any]:
        count = _count(args)
        total = max(1, self.server.workers_wanted() - count)
        previous = self.server.set_workers(total)
        return {"removed": previous - total, "previous": previous, "total": total}

    def worker_kill(self, args: list[str]) -> dict[str, Any]:
        if len(args) != 1 or not args[0].isdigit():
            raise CommandError("usage: worker kill PID")
        pid = int(args[0])
        if not self.server.kill_worker(pid):
            raise CommandError(f"no worker with pid {pid}")
        return {"killed": pid}

    # --- the server

    def reload(self, args: list[str]) -> dict[str, Any]:
        _no_args("reload", args)
        self.server.reload()
        return {"reloading": True}

    def reopen(self, args: list[str]) -> dict[str, Any]:
        _no_args("reopen", args)
        self.server.reopen()
        return {"reopened": True}

    def shutdown(self, args: list[str]) -> dict[str, Any]:
        mode = args[0].lower() if args else "graceful"
        if len(args) > 1 or mode not in ("graceful", "quick"):
            raise CommandError("usage: shutdown [graceful|quick]")
        self.server.shutdown(graceful=mode == "graceful")
        return {"stopping": mode}

    def help(self, args: list[str]) -> dict[str, Any]:
        return {"commands": HELP}


def _count(args: list[str]) -> int:
    if not args:
        return 1
    if len(args) != 1 or not args[0].isdigit() or int(args[0]) < 1:
        raise CommandError("expected a positive number of workers")
    return int(args[0])


def _no_args(name: str, args: list[str]) -> None:
    if args:
        raise CommandError(f"{name} takes no argument")


def encode(reply: dict[str, Any]) -> bytes:
    return (json.dumps(reply, separators=(",", ":"), default=str) + "\n").encode("utf-8")


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a unix socket, if the kernel says."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    data = sock.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size)
    return int(_PEERCRED.unpack(data)[1])


class ControlEndpoint(Endpoint):
    """The control socket, served from the master's loop."""

    deadline = 5.0
    max_request = 4096

    def __init__(self, sock: socket.socket, path: str, log: Logger, commands: Commands) -> None:
        super().__init__(sock, f"control socket {path}", log, owned_path=path)
        self.commands = commands

    def admit(self, sock: socket.socket) -> bytes | None:
        uid = peer_uid(sock)
        if uid is None or uid == 0 or uid == os.geteuid():
            return None
        self.log.warning("Control socket: refused a client running as uid %s", uid)
        return encode({"ok": False, "error": "permission denied: only the server's user "
                                             "or root may use the control socket"})

    def answer(self, data: bytes) -> bytes | None:
        line, newline, _ = data.partition(b"\n")
        if not newline:
            return None
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            return encode({"ok": False, "error": "the command is not UTF-8 text"})
        try:
            result = self.commands.run(text)
        except CommandError as exc:
            return encode({"ok": False, "error": str(exc)})
        if text.split()[0].lower() not in ("show", "help"):
            self.log.info("Control socket: %s", text)
        return encode({"ok": True, "command": " ".join(text.split()), "data": result})

    def too_large(self) -> bytes:
        return encode({"ok": False, "error": "command too long"})

    def failed(self) -> bytes:
        return encode({"ok": False, "error": "internal error (see the server's log)"})
