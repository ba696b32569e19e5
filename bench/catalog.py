# What can be benchmarked: the servers (command templates) and the scenarios.
# A template is split with shlex and run without a shell; its placeholders are
# {python} {app} {port} {workers} {threads} {host} {bench}.
from __future__ import annotations

from dataclasses import dataclass

HOST = "127.0.0.1"
MIB = 1 << 20


@dataclass(frozen=True)
class ServerSpec:
    name: str
    template: str
    needs: str = ""  # a module that must import in the servers' Python, if optional
    # Has a master that stops gracefully on SIGTERM: only such servers are in
    # the start-up/shutdown and master-memory scenarios.
    supervised: bool = True


PRESETS = {s.name: s for s in (
    ServerSpec("prefork",
               "{python} -m prefork -w {workers} -b {host}:{port} --log-level warning {app}"),
    ServerSpec("prefork-gthread",
               "{python} -m prefork -k gthread -w {workers} --threads {threads} -b {host}:{port} "
               "--log-level warning {app}"),
    # The cost of metrics: the same prefork counting every request into its
    # scoreboard for --metrics-bind (nobody scrapes during the run).
    ServerSpec("prefork-metrics",
               "{python} -m prefork -w {workers} -b {host}:{port} --log-level warning "
               "--metrics-bind {host}:0 {app}"),
    # Steady recycling: each worker is replaced after 200 requests, as with a
    # per-request leak (the recycling issue's benchmark: >= 95% of prefork's).
    ServerSpec("prefork-recycle",
               "{python} -m prefork -w {workers} -b {host}:{port} --log-level warning "
               "--max-requests 200 {app}"),
    ServerSpec("gunicorn-sync",
               "{python} -m gunicorn -k sync -w {workers} -b {host}:{port} "
               "--log-level warning {app}"),
    ServerSpec("gunicorn-gthread",
               "{python} -m gunicorn -k gthread -w {workers} --threads {threads} "
               "-b {host}:{port} --log-level warning {app}"),
    ServerSpec("granian",
               "{python} -m granian --interface wsgi --workers {workers} --blocking-threads "
               "{threads} --host {host} --port {port} --log-level warning {app}",
               needs="granian"),
    # C servers: {workers} processes sharing one socket; one process.
    ServerSpec("bjoern-fork", "{python} {bench}/launch.py bjoern {app} {port} --fork {workers}",
               needs="bjoern", supervised=False),
    ServerSpec("bjoern", "{python} {bench}/launch.py bjoern {app} {port}",
               needs="bjoern", supervised=False),
    ServerSpec("meinheld", "{python} {bench}/launch.py meinheld {app} {port}",
               needs="meinheld", supervised=False),
)}

# Run when no -s is given; the optional ones only when they import.
DEFAULT_SERVERS = ("prefork", "prefork-gthread", "gunicorn-sync", "gunicorn-gthread", "granian",
                   "bjoern-fork", "meinheld")
BASELINE = "gunicorn-sync"


def parse_server(arg: str) -> ServerSpec:
    """``-s PRESET`` or ``-s 'NAME=COMMAND TEMPLATE'``."""
    if arg in PRESETS:
        return PRESETS[arg]
    name, sep, template = arg.partition("=")
    name = name.strip()
    if not sep or not name or " " in name or not template.strip():
        known = ", ".join(PRESETS)
        raise ValueError(f"unknown server {arg!r}: give a preset ({known}) or NAME=COMMAND")
    return ServerSpec(name, template.strip())


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "load", "lifecycle" or "memory"
    title: str
    app: str = "raw"
    method: str = "GET"
    body_size: int = 0  # request body, bytes
    close: bool = False  # the client sends Connection: close
    conns: int = 0  # 0: the --conns option
    expect: bytes = b""  # the probe's response body must be this...
    expect_length: int = 0  # ...or this long

    @property
    def headers(self) -> tuple[str, ...]:
        return ("Connection: close",) if self.close else ()


HELLO = b"Hello, World!"

SCENARIOS = {s.name: s for s in (
    Scenario("hello-ka", "load", "hello-world Flask, keep-alive client",
             app="hello", expect=HELLO),
    Scenario("hello-close", "load", "hello-world Flask, `Connection: close`",
             app="hello", close=True, expect=HELLO),
    Scenario("wait-50ms", "load", "an app that waits 50 ms per request (I/O-bound), keep-alive client",
             app="wait", expect=HELLO),
    Scenario("raw-ka", "load", "bare WSGI app (fixed body), keep-alive client",
             app="raw", expect=HELLO),
    Scenario("raw-close", "load", "bare WSGI app (fixed body), `Connection: close`",
             app="raw", close=True, expect=HELLO),
    Scenario("big", "load", "1 MiB response body (bare WSGI), keep-alive client",
             app="big", conns=10, expect_length=MIB),
    Scenario("upload", "load", "1 MiB upload (POST, bare WSGI reads it all), keep-alive client",
             app="echo", method="POST", body_size=MIB, conns=10, expect=str(MIB).encode()),
    Scenario("lifecycle", "lifecycle",
             "start-up (launch to first response) and idle shutdown (SIGTERM to exit)",
             app="hello", expect=HELLO),
    Scenario("master-rss", "memory",
             "master and worker RSS over many requests (bare WSGI, keep-alive client)",
             app="raw", expect=HELLO),
)}
