"""A real nginx, configured with examples/nginx/myapp.conf, in front of a real
prefork over a unix socket: the client's address and scheme reach the
application, nginx reuses its connection to prefork, and a large upload goes
through."""

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests
from conftest import APPS, ROOT, wait_until
from tlscerts import make_certs

from prefork.testing import serve


def _nginx():
    return shutil.which("nginx") or (os.access("/usr/sbin/nginx", os.X_OK) and "/usr/sbin/nginx")


pytestmark = pytest.mark.skipif(not _nginx(), reason="needs nginx (.ci/run installs nginx-light)")

UPLOAD = 8 * 1024 * 1024


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def site_config(sock, port, tls_port, certs):
    """examples/nginx/myapp.conf with our socket and loopback ports, plus an HTTPS listener."""
    conf = open(os.path.join(ROOT, "examples", "nginx", "myapp.conf")).read()
    edits = [
        ("server unix:/run/myapp.sock fail_timeout=0;", f"server unix:{sock} fail_timeout=0;"),
        ("    listen 80;\n", f"    listen 127.0.0.1:{port};\n    listen 127.0.0.1:{tls_port} ssl;\n"
                             f"    ssl_certificate {certs['server.pem']};\n"
                             f"    ssl_certificate_key {certs['server.key']};\n"),
    ]
    for old, new in edits:
        assert old in conf, f"examples/nginx/myapp.conf changed: no {old!r}"
        conf = conf.replace(old, new)
    return conf


def main_config(tmp):
    temp = "".join(f"  {name}_temp_path {tmp}/{name}_temp;\n"
                   for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # As root, nginx's workers would run as nobody, who cannot reach pytest's
    # private temporary directory; the user directive is ignored otherwise.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}worker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log info;\n"
            f"events {{ worker_connections 64; }}\n"
            f"http {{\n  access_log off;\n{temp}  include {tmp}/myapp.conf;\n}}\n")


def listening(port):
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def nginx(tmp, sock, certs):
    port, tls_port = free_port(), free_port()
    (tmp / "myapp.conf").write_text(site_config(sock, port, tls_port, certs))
    (tmp / "nginx.conf").write_text(main_config(tmp))
    proc = subprocess.Popen([_nginx(), "-e", str(tmp / "error.log"), "-p", str(tmp), "-c", str(tmp / "nginx.conf"),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        up = wait_until(lambda: proc.poll() is not None or (listening(port) and listening(tls_port)), 10)
        if not up or proc.poll() is not None:
            pytest.fail(f"nginx did not start:\n{(tmp / 'error.log').read_text()}")
        yield port, tls_port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


class Stack:
    def __init__(self, port, tls_port, sock, certs, server, error_log):
        self.port, self.tls_port, self.sock, self.certs = port, tls_port, sock, certs
        self.server, self.error_log = server, error_log


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    tmp = tmp_path_factory.mktemp("nginx")
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    sock = str(tmp / "app.sock")
    with serve("http_apps:router", 1, cwd=APPS, bind=f"unix:{sock}") as server:
        with nginx(tmp, sock, certs) as (port, tls_port):
            yield Stack(port, tls_port, sock, certs, server, tmp / "error.log")
    problems = [line for line in (tmp / "error.log").read_text().splitlines()
                if any(level in line for level in ("[error]", "[crit]", "[alert]", "[emerg]"))]
    assert not problems, "\n".join(problems)  # e.g. "upstream prematurely closed connection"


def get_environ(port, source="127.0.0.1", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", "/environ_json", headers=headers or {})
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())
    finally:
        conn.close()


def test_client_address_and_scheme(stack):
    # The client's own X-Forwarded-* are spoofs: nginx appends to the first and
    # overwrites the second, and prefork reads the list from the right.
    env = get_environ(stack.port, source="127.0.0.2",
                      headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"})
    assert env["REMOTE_ADDR"] == "127.0.0.2"
    assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 127.0.0.2"
    assert (env["wsgi.url_scheme"], env["SERVER_NAME"], env["SERVER_PORT"]) == ("http", "127.0.0.1", "80")
    env = requests.get(f"https://127.0.0.1:{stack.tls_port}/environ_json", verify=stack.certs["ca.pem"],
                       timeout=10).json()
    # a unix socket has no port: SERVER_PORT is Host's, else the listener's scheme's;
    # the proxy's X-Forwarded-Proto changes the scheme, not the port
    assert (env["wsgi.url_scheme"], env["SERVER_PORT"]) == ("https", "80")
    assert env["REMOTE_ADDR"] == "127.0.0.1" and "HTTPS" not in env  # nginx, not prefork, did TLS


def prefork_connections(path):
    """Inodes of the connected sockets on prefork's side of the unix socket ``path``."""
    inodes = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode Path; St 03 = connected
            if len(fields) == 8 and fields[7] == path and fields[5] == "03":
                inodes.add(fields[6])
    return inodes


@pytest.mark.skipif(not os.path.exists("/proc/net/unix"), reason="reads /proc/net/unix (Linux)")
def test_nginx_keeps_its_connection_to_prefork(stack):
    seen = []
    for _ in range(5):
        assert get_environ(stack.port)["PATH_INFO"] == "/environ_json"
        seen.append(prefork_connections(stack.sock))
    # one connection, accepted once, carried all five requests
    assert len(seen[0]) == 1 and all(s == seen[0] for s in seen), seen


def test_large_upload(stack):
    body = os.urandom(1024) * (UPLOAD // 1024)
    started = time.monotonic()
    resp = requests.post(f"http://127.0.0.1:{stack.port}/echo", data=body, timeout=30)
    assert resp.status_code == 200 and len(resp.content) == UPLOAD and resp.content == body
    assert time.monotonic() - started < 10
