"""statsd with Gunicorn's names: lines received on a UDP socket on 127.0.0.1."""

import os
import signal
import socket
import time

import pytest
import requests

from prefork.statsd import normalize_prefix, parse_statsd_address

APP = "observed:app"


class Receiver:
    """A statsd server: every line it has received."""

    def __init__(self, family=socket.AF_INET, address=("127.0.0.1", 0)):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.lines = []

    @property
    def address(self):
        name = self.sock.getsockname()
        return f"unix:{name}" if isinstance(name, str) else f"127.0.0.1:{name[1]}"

    def wait_for(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not predicate(self.lines):
            if time.monotonic() > deadline:
                raise AssertionError(f"statsd lines so far: {self.lines}")
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.lines += data.decode().split("\n")
        return self.lines

    def close(self):
        self.sock.close()


@pytest.fixture
def receiver():
    rec = Receiver()
    yield rec
    rec.close()


def count(lines, line):
    return sum(1 for x in lines if x == line)


def test_gunicorn_names_prefix_and_tags(test_app, receiver):
    server = test_app(APP, 1, statsd_host=receiver.address, statsd_prefix="shop.api",
                      dogstatsd_tags="env:test,team:web")
    tags = "|#env:test,team:web"
    receiver.wait_for(lambda lines: f"shop.api.gunicorn.workers:1|g{tags}" in lines)
    session = requests.Session()
    for status in (200, 200, 404):
        assert session.get(f"{server.url}/?status={status}").status_code == status
    lines = receiver.wait_for(lambda lines: count(lines, f"shop.api.gunicorn.requests:1|c|@1.0{tags}") == 3)
    assert count(lines, f"shop.api.gunicorn.request.status.200:1|c|@1.0{tags}") == 2
    assert count(lines, f"shop.api.gunicorn.request.status.404:1|c|@1.0{tags}") == 1
    durations = [x for x in lines if x.startswith("shop.api.gunicorn.request.duration:")]
    assert len(durations) == 3
    for line in durations:
        value, kind = line[len("shop.api.gunicorn.request.duration:"):].split("|", 1)
        assert kind == f"ms{tags}" and 0 < float(value) < 10_000


def test_log_counters_workers_gauge_and_backlog(test_app, receiver):
    server = test_app(APP, 2, statsd_host=receiver.address, enable_backlog_metric=True)
    receiver.wait_for(lambda lines: "gunicorn.workers:2|g" in lines)
    receiver.wait_for(lambda lines: "gunicorn.backlog:0|ms" in lines)
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)  # the master logs an error for it
    receiver.wait_for(lambda lines: "gunicorn.log.error:1|c|@1.0" in lines)
    server.send_signal(signal.SIGTTIN)
    receiver.wait_for(lambda lines: "gunicorn.workers:3|g" in lines)


def test_no_statsd_server_never_fails_a_request(test_app):
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nobody listens: every datagram is refused
    server = test_app(APP, 1, statsd_host=f"127.0.0.1:{port}")
    session = requests.Session()
    assert all(session.get(server.url).ok for _ in range(20))


def test_unix_datagram_socket(test_app, tmp_path):
    rec = Receiver(socket.AF_UNIX, str(tmp_path / "statsd.sock"))
    try:
        server = test_app(APP, 1, statsd_host=rec.address)
        assert requests.get(server.url).ok
        rec.wait_for(lambda lines: "gunicorn.requests:1|c|@1.0" in lines)
    finally:
        rec.close()


def test_addresses_and_prefixes():
    assert parse_statsd_address("localhost") == ("udp", ("localhost", 8125))
    assert parse_statsd_address("10.0.0.1:9125") == ("udp", ("10.0.0.1", 9125))
    assert parse_statsd_address("[::1]:9125") == ("udp", ("::1", 9125))
    assert parse_statsd_address("unix:/run/statsd.sock") == ("unix", "/run/statsd.sock")
    assert parse_statsd_address("unix:///run/statsd.sock") == ("unix", "/run/statsd.sock")
    for bad in ("host:port", "a b:1", "unix:", "h:70000"):
        with pytest.raises(ValueError):
            parse_statsd_address(bad)
    assert normalize_prefix("") == ""
    assert normalize_prefix("app") == normalize_prefix("app..") == "app."


def test_a_bad_statsd_setting_exits_2(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "prefork", "--statsd-host", "nope:port", "x:app"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--statsd-host" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
