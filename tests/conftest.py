import os
import signal
import socket
import sys
import threading
import time

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "tests", "apps")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# The worker classes every end-to-end HTTP test runs under, with their settings.
WORKER_CLASSES = {
    "sync": {},
    "gthread": {"worker_class": "gthread", "threads": 4},
}


@pytest.fixture(params=sorted(WORKER_CLASSES))
def worker_settings(request):
    """Settings for one worker class: the test runs once per class."""
    return WORKER_CLASSES[request.param]


# Every wait has a deadline: a request made without a timeout gets one.
_session_request = requests.Session.request


def _request_with_deadline(self, method, url, **kwargs):
    kwargs.setdefault("timeout", 30)
    return _session_request(self, method, url, **kwargs)


requests.Session.request = _request_with_deadline


@pytest.fixture
def hello(prefork_server):
    """Start the example Flask app; extra keyword arguments are settings."""

    def start(workers=1, **settings):
        return prefork_server("examples.hello_flask:app", workers, cwd=ROOT, **settings)

    return start


@pytest.fixture
def test_app(prefork_server):
    """Start an app from tests/apps (``module:callable``)."""

    def start(app, workers=1, **settings):
        return prefork_server(app, workers, cwd=APPS, **settings)

    return start


@pytest.fixture
def shared_dir():
    """A directory the unprivileged worker user can create files in."""
    import pathlib
    import shutil
    import tempfile

    path = pathlib.Path(tempfile.mkdtemp(prefix="prefork-shared-", dir="/tmp"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def raw_request(port, data, timeout=5.0, read_all=True):
    """Send raw bytes, return everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_all:
                break
        return b"".join(chunks)


def wait_until(predicate, timeout, interval=0.01):
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def alive(pid):
    """Whether ``pid`` is a running process (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return not f.read().rsplit(") ", 1)[1].startswith("Z")
    except OSError:
        return False


def sleeping(pid):
    """Whether process ``pid`` is inside a sleep (the sleepy test app's time.sleep)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read()
    except OSError:
        return False
    return "hrtimer" in wchan or "nanosleep" in wchan


def a_worker_sleeps(server):
    """Whether one of the server's workers is inside the application's sleep."""
    return any(sleeping(pid) for pid in server.worker_pids())


def term_during_request(server, seconds):
    """GET basic:sleepy for ``seconds``, SIGTERM the master while a worker serves
    it, check the master exits 0; return the response."""
    result = {}

    def client():
        result["response"] = requests.get(f"{server.url}/?{seconds}", timeout=15)

    thread = threading.Thread(target=client)
    thread.start()
    assert wait_until(lambda: a_worker_sleeps(server), 5)
    server.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    thread.join(15)
    return result["response"]


def port_is_free(port):
    """Whether a new socket can listen on 127.0.0.1:``port`` now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (for a server's --bind)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unix_get(path):
    """GET / over the unix socket at ``path`` (HTTP/1.0); every byte of the answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data
