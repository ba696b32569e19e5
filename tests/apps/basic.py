"""Small WSGI apps for the tests (no framework)."""

import os
import sys
import time


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def pid(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def environ_app(environ, start_response):
    """Return the environ's string values, one KEY=value per line."""
    body = "\n".join(
        f"{k}={v}" for k, v in sorted(environ.items()) if isinstance(v, str)
    ).encode("utf-8", "backslashreplace")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def sleepy(environ, start_response):
    """Sleep for ?N seconds, then answer."""
    seconds = float(environ.get("QUERY_STRING") or "1")
    time.sleep(seconds)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept %.1f" % seconds]


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def crash(environ, start_response):
    raise RuntimeError("boom")


def write_then_iterate(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one ")
    return [b"two ", b"three"]


def exits(environ, start_response):
    sys.stdout.flush()
    os._exit(7)


def factory(greeting="hi", punct="!"):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{greeting}{punct}".encode()]

    return app


application = hello
not_callable = 42


def big(environ, start_response):
    """16 MiB in one piece."""
    body = b"x" * (16 << 20)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]
