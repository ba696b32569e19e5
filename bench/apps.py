"""WSGI applications the benchmark servers import as ``apps:NAME``.

The runner starts every server with bench/ as its working directory and on
PYTHONPATH. Each app does as little as it can, so that what is measured is
the server:

  hello   Flask, ``/`` -> ``Hello, World!`` (the Flask quickstart app)
  raw     bare WSGI, a fixed 13-byte body with Content-Length
  big     bare WSGI, a 1 MiB body (one prebuilt bytes object)
  echo    bare WSGI, reads the whole request body, answers its length
  wait    bare WSGI, sleeps 50 ms (a database or an upstream call), then ``raw``
  pid     bare WSGI, answers the worker's pid (bench/handover.py)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]

try:
    import flask
except ImportError:  # the bare apps still work without Flask
    flask = None  # type: ignore[assignment]

if flask is not None:
    hello = flask.Flask(__name__)

    @hello.route("/")
    def hello_world() -> str:
        return "Hello, World!"


_HELLO = b"Hello, World!"
_HELLO_HEADERS = [("Content-Type", "text/plain; charset=utf-8"),
                  ("Content-Length", str(len(_HELLO)))]


def raw(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", list(_HELLO_HEADERS))
    return [_HELLO]


BIG_SIZE = 1 << 20
_BIG = b"x" * BIG_SIZE
_BIG_HEADERS = [("Content-Type", "application/octet-stream"),
                ("Content-Length", str(BIG_SIZE))]


def big(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", list(_BIG_HEADERS))
    return [_BIG]


def echo(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Read the body in 64 KiB pieces (Content-Length, else to EOF); answer its length."""
    stream = environ["wsgi.input"]
    try:
        remaining = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        remaining = -1
    total = 0
    while remaining != 0:
        chunk = stream.read(65536 if remaining < 0 else min(remaining, 65536))
        if not chunk:
            break
        total += len(chunk)
        if remaining > 0:
            remaining -= len(chunk)
    body = str(total).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def wait(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Wait 50 ms without using the CPU, as a request does on its database."""
    time.sleep(0.05)
    return raw(environ, start_response)


def pid(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Answer the worker's pid (bench/handover.py counts requests per worker)."""
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


# bench/handover.py: make every worker's start take this long, as a real app's imports do.
if os.environ.get("BENCH_BOOT_DELAY"):
    time.sleep(float(os.environ["BENCH_BOOT_DELAY"]))
