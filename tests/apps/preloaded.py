"""Records the pid of the process that imported it (the master, with --preload)."""

import os

IMPORTED_BY = os.getpid()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{IMPORTED_BY} {os.getpid()} {os.environ.get('GREETING', '')}".encode()]
