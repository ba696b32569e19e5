"""Apps for the reliability tests: errors that are the application's own,
sys.exit() in a request, a status without reason phrase, an app that forks."""

import os
import sys
import time

ERRORS = {
    "notfound": lambda: FileNotFoundError(2, "No such file or directory", "/nonexistent"),
    "refused": lambda: ConnectionRefusedError(111, "Connection refused"),
    "timeout": lambda: TimeoutError("upstream timed out"),
    "permission": lambda: PermissionError(13, "Permission denied"),
}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/oserror":
        raise ERRORS[query]()
    if path == "/stream_oserror":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream_then_fail()
    if path == "/exit":
        sys.exit(3)  # the exit status a worker uses for "could not boot": must not read as one
    if path == "/noreason":
        start_response("200", [("Content-Length", "2")])
        return [b"ok"]
    if path == "/fork":
        return _fork(environ, start_response)
    body = str(os.getpid()).encode()
    if path == "/think":
        time.sleep(float(query or "0.01"))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _stream_then_fail():
    yield b"first piece\n"
    raise ConnectionRefusedError(111, "Connection refused by the upstream")


def _fork(environ, start_response):
    """Start a child that outlives the request, holding every descriptor."""
    pid = os.fork()
    if pid == 0:
        time.sleep(float(environ.get("QUERY_STRING") or "3"))
        os._exit(0)
    with open(os.path.join(os.environ.get("FORK_PIDS_DIR", "/tmp"), f"{pid}.pid"), "w") as f:
        f.write(str(pid))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"forked ", str(pid).encode()])  # no length: chunked, or close-delimited
