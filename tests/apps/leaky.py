"""Apps for the recycling tests: one that leaks memory on every request, and
one that keeps growing inside a single request."""

import os
import time

_kept = []  # what the application "leaks": never freed while the worker lives


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/leak":
        # Filled, not zeroed: zero pages from calloc/mmap would not count as resident.
        _kept.append(b"\x01" * (int(query or "1") << 20))
    elif path == "/grow":
        _grow(*(float(x) for x in (query or "4,0.1,300").split(",")))
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _grow(mib, every, seconds):
    """Add ``mib`` MiB every ``every`` seconds, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _kept.append(b"\x01" * (int(mib) << 20))
        time.sleep(every)
