"""End to end, against a real server with each head parser: the version a
request is served as (RFC 9110 §2.5), the default request-line and field-line
limits, fields that may occur only once, and SERVER_NAME / SERVER_PORT over
TCP and over a unix socket (RFC 3875 §4.1.14, §4.1.15)."""

import importlib.util
import json
import re
import socket

import pytest
from conftest import APPS
from rawhttp import Conn, get

from prefork.http.request import Limits, parse_head
from prefork.testing import serve
from prefork.wsgi import EMPTY_INPUT, base_environ, build_environ

needs_httptools = pytest.mark.skipif(
    importlib.util.find_spec("httptools") is None, reason="httptools is not installed")


@pytest.fixture(scope="module", params=["python", pytest.param("httptools", marks=needs_httptools)])
def server(request):
    with serve("http_apps:router", 1, cwd=APPS, http_parser=request.param) as s:
        yield s


def environ_of(resp):
    assert resp.status == 200, resp
    return json.loads(resp.body)


def refused(server, data, status, detail):
    """Send ``data`` on a new connection: it must get ``status``, a close, and a log line."""
    start = len(server.log_text())
    with Conn(server.port) as c:
        c.send(data)
        resp = c.read_response()
        assert resp.status == status
        assert resp.header("Connection") == "close"
        assert c.closed_by_server()
    server.wait_for_log(r"rejected request from 127\.0\.0\.1:\d+: %d .*%s" % (status, re.escape(detail)),
                        start=start)


# --- versions


def test_a_higher_minor_version_is_served_as_http11(server):
    with Conn(server.port) as c:
        resp = c.request(b"GET /environ_json HTTP/1.2\r\nHost: x\r\n\r\n")
        assert resp.raw_head.startswith(b"HTTP/1.1 200 ")
        assert environ_of(resp)["SERVER_PROTOCOL"] == "HTTP/1.1"
        assert resp.header("Connection") is None  # persistent by default, as HTTP/1.1
        resp = c.request(b"GET /stream?n=2 HTTP/1.9\r\nHost: x\r\n\r\n")  # the same connection
        assert (resp.header("Transfer-Encoding"), resp.body) == ("chunked", b"piece 0;piece 1;")
    refused(server, b"GET / HTTP/1.2\r\n\r\n", 400, "HTTP/1.1 request without Host")
    refused(server, b"GET / HTTP/2.1\r\nHost: x\r\n\r\n", 505, "HTTP/2.1 is not supported")


# --- limits


def test_request_lines_up_to_8190_bytes_are_served(server):
    line = "GET /hello?" + "q" * (8190 - 20) + " HTTP/1.1"
    assert len(line) == 8190
    with Conn(server.port) as c:
        assert c.request(f"{line}\r\nHost: x\r\n\r\n".encode()).body == b"hello"
    refused(server, f"{line[:-9]}q HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 414, "limit 8190")


def test_a_field_line_counts_with_its_crlf(server):
    with Conn(server.port) as c:  # 8188 bytes and CRLF: 8190
        assert c.request(get("/hello", extra="X-Big: " + "v" * 8181 + "\r\n")).body == b"hello"
    refused(server, get("/hello", extra="X-Big: " + "v" * 8182 + "\r\n"), 431, "'X-Big' is over 8190 bytes")


# --- fields that may occur once


@pytest.mark.parametrize("fields, name", [
    ("Content-Type: text/plain\r\nContent-Type: text/html\r\n", "content-type"),
    ("Authorization: Basic YTpi\r\nauthorization: Basic YTpi\r\n", "authorization"),
    ("Content-Length: 0\r\nContent-Length: 0\r\n", "Content-Length"),
    ("User-Agent: a\r\nX-A: 1\r\nUser-Agent: b\r\n", "user-agent"),
])
def test_a_repeated_singleton_field_is_refused(server, fields, name):
    refused(server, get("/hello", extra=fields), 400, f"more than one {name} field")


def test_fields_that_may_repeat_are_joined(server):
    with Conn(server.port) as c:
        env = environ_of(c.request(get("/environ_json", extra="Accept: a/b\r\nAccept: c/d\r\n")))
    assert env["HTTP_ACCEPT"] == "a/b,c/d"


# --- SERVER_NAME and SERVER_PORT


def test_server_port_is_the_port_the_request_came_in_on(server):
    port = str(server.port)
    with Conn(server.port) as c:
        env = environ_of(c.request(get("/environ_json", host="example.com")))
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", port)
        env = environ_of(c.request(get("/environ_json", host="example.com:8443")))
        assert (env["SERVER_NAME"], env["SERVER_PORT"], env["HTTP_HOST"]) == ("example.com", port,
                                                                              "example.com:8443")
        # a trusted proxy's scheme changes wsgi.url_scheme, not the port
        env = environ_of(c.request(get("/environ_json", host="example.com",
                                       extra="X-Forwarded-Proto: https\r\n")))
        assert (env["wsgi.url_scheme"], env["SERVER_PORT"]) == ("https", port)
        env = environ_of(c.request(b"GET /environ_json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", port)


def test_server_port_on_a_unix_socket(test_app, tmp_path):
    path = str(tmp_path / "app.sock")
    test_app("http_apps:router", bind=f"unix:{path}")
    with Conn(0, family=socket.AF_UNIX, address=path) as c:
        env = environ_of(c.request(get("/environ_json", host="example.com:8443")))
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "8443")
        env = environ_of(c.request(get("/environ_json", host="example.com")))
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "80")
        # never empty (PEP 3333), also without Host
        env = environ_of(c.request(b"GET /environ_json HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("localhost", "80")


def test_each_unix_listener_gives_its_own_schemes_port():
    # Regression: Host values were cached with the port of the first scheme seen,
    # so a worker with an http and an https listener mixed them up.
    req, _ = parse_head(get("/", host="example.com"), Limits())
    for scheme, port in (("http", "80"), ("https", "443"), ("http", "80")):
        base = base_environ("localhost", "", False, None, scheme)
        assert build_environ(base, req, ("127.0.0.1", ""), EMPTY_INPUT)["SERVER_PORT"] == port
