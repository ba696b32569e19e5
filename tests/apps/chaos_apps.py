"""Applications for the chaos suite (tests/chaos): slow ones, so that a test
knows what was in flight, and hostile ones that fork, leak descriptors or
memory, block in close() or call sys.exit() in a request.

Every answer that comes from a worker names it ("pid=N"), so a client can
tell which process served it.
"""

import os
import resource
import subprocess
import sys
import time
from urllib.parse import parse_qs

_leaked_fds = []
_leaked_memory = []


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _answer(start_response, body, status="200 OK"):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def pid(environ, start_response):
    """Answer at once with the worker's pid; ?s=SECONDS sleeps first."""
    seconds = float(_query(environ).get("s", "0"))
    if seconds:
        time.sleep(seconds)
    return _answer(start_response, b"pid=%d" % os.getpid())


def sink(environ, start_response):
    """Read the whole body, answer with its length: for mutated request heads."""
    body = environ["wsgi.input"].read()
    return _answer(start_response, b"read %d" % len(body))


def files(environ, start_response):
    """Open ?n descriptors for the length of the request (?s seconds), then close
    them; one that cannot be opened (EMFILE) is an OSError raised by the app."""
    q = _query(environ)
    fds = []
    try:
        for _ in range(int(q.get("n", "4"))):
            fds.append(os.open(os.devnull, os.O_RDONLY))
        time.sleep(float(q.get("s", "0.01")))
    finally:
        for fd in fds:
            os.close(fd)
    return _answer(start_response, b"pid=%d" % os.getpid())


def leak_fds(environ, start_response):
    """Open ?n descriptors and never close them."""
    for _ in range(int(_query(environ).get("n", "8"))):
        _leaked_fds.append(os.open(os.devnull, os.O_RDONLY))
    return _answer(start_response, b"pid=%d leaked=%d" % (os.getpid(), len(_leaked_fds)))


def _limit_address_space(headroom):
    """Cap this worker's address space ``headroom`` bytes above what it uses now,
    so that a leak ends in MemoryError within a few requests instead of
    taking the machine's memory."""
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + headroom, resource.getrlimit(resource.RLIMIT_AS)[1]))


def leak_memory(environ, start_response):
    """Keep ?mb MiB more on every request, in a worker whose address space is capped."""
    if not _leaked_memory:
        _limit_address_space(160 << 20)
        _leaked_memory.append(b"")
    _leaked_memory.append(bytearray(int(_query(environ).get("mb", "16")) << 20))
    return _answer(start_response, b"pid=%d chunks=%d" % (os.getpid(), len(_leaked_memory) - 1))


def forks(environ, start_response):
    """Fork a child that lives ?s seconds holding every descriptor of the worker
    (the client connection included); ?stream=1 answers without a
    Content-Length, so the end of the response is the end of the connection."""
    q = _query(environ)
    seconds = float(q.get("s", "5"))
    child = os.fork()
    if child == 0:
        try:
            time.sleep(seconds)
        finally:
            os._exit(0)
    body = b"pid=%d child=%d" % (os.getpid(), child)
    if q.get("stream"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([body])
    return _answer(start_response, body)


def spawns(environ, start_response):
    """Start ``sleep ?s`` in the background the way os.system("cmd &") does:
    an exec'd child that keeps every inheritable descriptor."""
    seconds = _query(environ).get("s", "30")
    child = subprocess.Popen(["sleep", seconds], close_fds=False)
    return _answer(start_response, b"pid=%d child=%d" % (os.getpid(), child.pid))


class _BlockingClose:
    def __init__(self, body, seconds):
        self.body = body
        self.seconds = seconds

    def __iter__(self):
        return iter([self.body])

    def close(self):
        time.sleep(self.seconds)


def close_blocks(environ, start_response):
    """A complete response (Content-Length) whose close() then blocks ?s seconds."""
    body = b"pid=%d" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return _BlockingClose(body, float(_query(environ).get("s", "0.3")))


def exits(environ, start_response):
    """sys.exit() in the middle of a request: ?code=N (int), ?code=text, or none."""
    code = _query(environ).get("code")
    if code is None:
        sys.exit()
    sys.exit(int(code) if code.lstrip("-").isdigit() else code)


def router(environ, start_response):
    """One app for every scenario of a server: the first path segment picks it."""
    name = environ.get("PATH_INFO", "/").strip("/").split("/")[0] or "pid"
    app = ROUTES.get(name)
    if app is None:
        return _answer(start_response, b"no such app", "404 Not Found")
    return app(environ, start_response)


ROUTES = {
    "pid": pid,
    "sink": sink,
    "files": files,
    "leak_fds": leak_fds,
    "leak_memory": leak_memory,
    "forks": forks,
    "spawns": spawns,
    "close_blocks": close_blocks,
    "exits": exits,
}
