# ``preforkctl``: the client of the control socket (--control-socket).
#
#     preforkctl -s /run/prefork/ctl.sock -c "show workers"
#     preforkctl -s /run/prefork/ctl.sock -c "show stats" -j     # JSON, for scripts
#     preforkctl -s /run/prefork/ctl.sock                        # interactive
#
# One connection per command: send the line, read the JSON reply, print it as
# text (or as JSON with -j). Exit status: 0 when the command succeeded, 1 when
# the server refused it (an unknown command, a bad argument) or could not be
# reached, 2 for a bad command line.
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

ENV_SOCKET = "PREFORK_CONTROL_SOCKET"
TIMEOUT = 10.0


class Unreachable(Exception):
    """The control socket cannot be used; the message is one line."""


def send(path: str, command: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Run one command on the server at ``path``; its reply."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise Unreachable(f"cannot connect to {path}: {exc.strerror or exc}") from None
        data = b""
        try:
            sock.sendall(command.encode("utf-8") + b"\n")
            while chunk := sock.recv(65536):
                data += chunk
        except OSError as exc:
            raise Unreachable(f"{path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except ValueError:
        raise Unreachable(f"{path}: not a prefork control socket (unexpected reply)") from None
    if not isinstance(reply, dict):
        raise Unreachable(f"{path}: not a prefork control socket (unexpected reply)")
    return reply


# --- text output


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / (1 << 20):.1f}M"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def render_workers(data: dict[str, Any]) -> str:
    rows = [["PID", "STATE", "AGE", "REQUESTS", "RSS", "PSS", "GEN"]]
    details = []
    for w in data["workers"]:
        rows.append([str(w["pid"]), w["state"], _age(w["age"]), str(w["requests"]), _mib(w["rss"]),
                     _mib(w["pss"]), str(w["generation"])])
        for r in w["in_progress"]:
            details.append(f"  {w['pid']} thread {r['thread']}: {r['method']} {r['path']} "
                           f"({_age(r['age'])})")
    text = _table(rows) + f"\n\n{len(data['workers'])} workers ({data['wanted']} wanted)"
    if details:
        text += "\nin progress:\n" + "\n".join(details)
    return text


def render_listeners(data: dict[str, Any]) -> str:
    rows = [["LISTENER", "WORKER", "QUEUE", "MAX"]]
    for row in data["listeners"]:
        rows.append([row["listener"], str(row["pid"] or "-"), _or_dash(row["queue"]),
                     _or_dash(row["max"])])
    return _table(rows)


def render_config(data: dict[str, Any]) -> str:
    rows = [["SETTING", "VALUE", "SOURCE"]]
    rows += [[row["name"], json.dumps(row["value"]), row["source"]] for row in data["settings"]]
    return _table(rows)


def render_help(data: dict[str, Any]) -> str:
    rows = [[name, text] for name, text in data["commands"].items()]
    return _table(rows) + "\n(quit or exit leaves the interactive mode)"


def render_plain(data: Any, indent: str = "") -> str:
    if isinstance(data, dict):
        lines = []
        for key, value in data.items():
            if isinstance(value, dict) and value:
                lines.append(f"{indent}{key}:")
                lines.append(render_plain(value, indent + "  "))
            else:
                lines.append(f"{indent}{key}: {_scalar(value)}")
        return "\n".join(lines)
    return f"{indent}{_scalar(data)}"


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value) if value else "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


RENDERERS = {"show workers": render_workers, "show listeners": render_listeners,
             "show config": render_config, "help": render_help}


def render(reply: dict[str, Any]) -> str:
    command = reply.get("command", "")
    return RENDERERS.get(command, render_plain)(reply.get("data"))


# --- the command


def run_one(path: str, command: str, as_json: bool) -> int:
    try:
        reply = send(path, command)
    except Unreachable as exc:
        print(f"preforkctl: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        if as_json:
            print(json.dumps(reply))
        print(f"preforkctl: {reply.get('error', 'the command failed')}", file=sys.stderr)
        return 1
    print(json.dumps(reply.get("data"), indent=2) if as_json else render(reply))
    return 0


def interactive(path: str, as_json: bool) -> int:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    status = 0
    tty = sys.stdin.isatty()
    if tty:
        print(f"preforkctl: {path}; 'help' lists the commands, 'quit' leaves")
    while True:
        try:
            line = input("prefork> " if tty else "")
        except EOFError:
            if tty:
                print()
            return status
        except KeyboardInterrupt:
            print()
            return status
        command = line.strip()
        if not command:
            continue
        if command in ("quit", "exit"):
            return status
        status = run_one(path, command, as_json)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="preforkctl",
        description="Inspect and manage a running prefork server through its control socket.")
    p.add_argument("-s", "--socket", default=os.environ.get(ENV_SOCKET),
                   help=f"the server's --control-socket (default: ${ENV_SOCKET})")
    p.add_argument("-c", "--command", help='run one command, e.g. "show workers", and exit')
    p.add_argument("-j", "--json", action="store_true", help="print the reply as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.socket:
        print(f"preforkctl: no control socket: give -s PATH (or set ${ENV_SOCKET})", file=sys.stderr)
        return 2
    if args.command is not None:
        return run_one(args.socket, args.command, args.json)
    return interactive(args.socket, args.json)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
