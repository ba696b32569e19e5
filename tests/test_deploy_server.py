"""Deployment features end to end, against a real prefork over real sockets: TLS
(a certificate made by ``openssl`` at test time, ``requests`` verifying it),
client certificates, the handshake deadline, PROXY protocol v1/v2, forwarded
headers from trusted and untrusted peers, and unix-socket binds."""

import json
import shutil
import socket
import struct
import time

import pytest
import requests
from conftest import raw_request
from rawhttp import Conn, get, post
from tlscerts import make_certs

from prefork.http.proxy import V2_SIGNATURE
from prefork.listener import DEFER_ACCEPT

ROUTER = "http_apps:router"
V1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 4711 443\r\n"
V2 = V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes([198, 51, 100, 7, 10, 0, 0, 1]) + struct.pack("!HH", 4711, 443)
V2_TCP6 = (V2_SIGNATURE + b"\x21\x21\x00\x24" + socket.inet_pton(socket.AF_INET6, "2001:db8::7")
           + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + struct.pack("!HH", 4711, 443))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    return make_certs(tmp_path_factory.mktemp("certs"))


def environ_of(resp):
    assert resp.status == 200, resp
    return json.loads(resp.body)


def environ_over(conn, extra="", host="x", prefix=b""):
    """One request for the environ on ``conn``, after ``prefix`` (a PROXY header)."""
    return environ_of(conn.request(prefix + get("/environ_json", host=host, extra=extra)))


def https_url(server):
    return server.url.replace("http://", "https://", 1)


def tls_server(test_app, certs, **settings):
    return test_app(ROUTER, certfile=certs["server.pem"], keyfile=certs["server.key"], **settings)


# --- TLS


def test_https_with_a_verified_certificate(test_app, certs, tmp_path, worker_settings):
    server = tls_server(test_app, certs, **worker_settings)
    url = https_url(server)
    with requests.Session() as session:
        env = session.get(f"{url}/environ_json", verify=certs["ca.pem"], timeout=10).json()
        assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
        assert env["SSL_PROTOCOL"].startswith("TLSv1.") and env["SSL_CLIENT_VERIFY"] == "NONE"
        assert env["SERVER_PORT"] == str(server.port)
        again = session.get(f"{url}/environ_json", verify=certs["ca.pem"], timeout=10).json()
        assert again["REMOTE_PORT"] == env["REMOTE_PORT"]  # kept alive over TLS
        body = bytes(range(256)) * 4096  # 1 MiB, in many TLS records
        assert session.post(f"{url}/echo", data=body, verify=certs["ca.pem"], timeout=10).content == body
        # a file wrapper is read and encrypted, never os.sendfile'd past TLS
        data = tmp_path / "data.bin"
        data.write_bytes(body[:300_000])
        got = session.get(f"{url}/file", params={"path": str(data)}, verify=certs["ca.pem"], timeout=10)
        assert got.content == body[:300_000]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=10)  # not signed by a CA the client trusts


def test_an_idle_tls_connection_makes_no_newcomer_wait(test_app, certs):
    """One worker, a kept TLS connection idle: a new client is served at once,
    and the idle connection goes on serving its client."""
    server = tls_server(test_app, certs, keepalive=30)
    with requests.Session() as first, requests.Session() as second:
        assert first.get(f"{https_url(server)}/hello", verify=certs["ca.pem"], timeout=10).text == "hello"
        started = time.monotonic()
        assert second.get(f"{https_url(server)}/hello", verify=certs["ca.pem"], timeout=10).text == "hello"
        assert time.monotonic() - started < 3  # not --keep-alive's 30 s
        assert first.get(f"{https_url(server)}/hello", verify=certs["ca.pem"], timeout=10).text == "hello"
    assert "Traceback" not in server.log_text() and "error handling" not in server.log_text()


def test_plain_http_on_the_tls_port_gets_a_clean_error(test_app, certs):
    server = tls_server(test_app, certs)
    [worker] = server.worker_pids()
    answer = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answer.endswith(b"This port speaks HTTPS: use an https:// URL.\n")
    response = requests.get(f"{https_url(server)}/pid", verify=certs["ca.pem"], timeout=10)
    assert response.text == str(worker)  # the same worker goes on serving


def test_client_certificate_required(test_app, certs):
    server = tls_server(test_app, certs, cert_reqs=2, ca_certs=certs["ca.pem"])
    url = f"{https_url(server)}/environ_json"
    [worker] = server.worker_pids()
    env = requests.get(url, verify=certs["ca.pem"], cert=(certs["client.pem"], certs["client.key"]),
                       timeout=10).json()
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN"] == "CN=alice,O=Example\\, Inc.,C=FR"
    for cert in (None, (certs["rogue.pem"], certs["rogue.key"])):
        with pytest.raises(requests.exceptions.ConnectionError):  # SSLError, or a reset under TLS 1.3
            requests.get(url, verify=certs["ca.pem"], cert=cert, timeout=10)
    response = requests.get(f"{https_url(server)}/pid", verify=certs["ca.pem"],
                            cert=(certs["client.pem"], certs["client.key"]), timeout=10)
    assert response.text == str(worker)


def test_silent_client_on_the_tls_port_is_dropped_at_the_deadline(test_app, certs):
    """With one worker, a client that connects and says nothing holds it only until
    the handshake deadline (--timeout), and the worker is not killed for it. On
    Linux it does not hold the worker at all: TCP_DEFER_ACCEPT keeps it in the
    kernel for about a second, then the worker drops it at the deadline."""
    server = tls_server(test_app, certs, timeout=2)
    [worker] = server.worker_pids()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        started = time.monotonic()
        response = requests.get(f"{https_url(server)}/pid", verify=certs["ca.pem"], timeout=15)
        waited = time.monotonic() - started
        assert response.text == str(worker)
        if DEFER_ACCEPT is None:
            assert 1.5 < waited < 5, waited  # served once the silent one was dropped
        else:
            assert waited < 1.5, waited  # served while the silent one waits in the kernel
        assert silent.recv(1) == b""  # closed by the server
    assert "WORKER TIMEOUT" not in server.log_text()


# --- PROXY protocol


@pytest.mark.parametrize("header, addr", [(V1, "198.51.100.7"), (V2, "198.51.100.7"), (V2_TCP6, "2001:db8::7")],
                         ids=["v1", "v2", "v2-tcp6"])
def test_proxy_protocol_sets_the_client_address(test_app, header, addr, worker_settings):
    server = test_app(ROUTER, proxy_protocol=True, **worker_settings)
    with Conn(server.port) as conn:
        env = environ_over(conn, prefix=header, extra="X-Forwarded-For: 6.6.6.6\r\n")
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == (addr, "4711")
        assert env["PROXY_PORT"] == "443" and env["PROXY_PROTOCOL"] in ("TCP4", "TCP6")
        assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6"  # the client is no trusted proxy
        again = environ_over(conn)  # the header came once; it holds for the connection
        assert again["REMOTE_ADDR"] == addr and again["PROXY_ADDR"] == env["PROXY_ADDR"]


@pytest.mark.parametrize("data", [
    b"PROXY TCP4 198.51.100.7 10.0.0.1 4711 99999\r\n" + get("/pid"),
    b"PROXY TCP9 198.51.100.7 10.0.0.1 4711 443\r\n" + get("/pid"),
    V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4 + get("/pid"),  # too short for TCP4
    get("/pid"),  # no header at all
], ids=["port-range", "protocol", "v2-length", "missing"])
def test_malformed_proxy_header_closes_the_connection(test_app, data):
    server = test_app(ROUTER, proxy_protocol=True)
    [worker] = server.worker_pids()
    assert raw_request(server.port, data) == b""  # closed, not a byte of answer
    with Conn(server.port) as conn:
        assert conn.request(V1 + get("/pid")).body == str(worker).encode()


def test_peer_not_allowed_to_send_proxy_headers_speaks_plain_http(test_app):
    server = test_app(ROUTER, proxy_protocol=True, proxy_allow_ips="10.0.0.0/8")
    with Conn(server.port) as conn:
        env = environ_over(conn)
        assert env["REMOTE_ADDR"] == "127.0.0.1" and "PROXY_ADDR" not in env
    with Conn(server.port) as conn:
        assert conn.request(V1 + get("/environ_json")).status == 400  # never believed


def test_proxy_protocol_on_a_unix_socket(test_app, tmp_path):
    path = str(tmp_path / "app.sock")
    test_app(ROUTER, proxy_protocol=True, bind=f"unix:{path}")
    with Conn(0, family=socket.AF_UNIX, address=path) as conn:
        env = environ_over(conn, prefix=V2)
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("198.51.100.7", "4711")


# --- forwarded headers

FORWARDED = "X-Forwarded-For: 198.51.100.1, 203.0.113.9\r\nX-Forwarded-Proto: https\r\n"


def test_trusted_peer_sets_the_client_and_scheme(test_app, worker_settings):
    server = test_app(ROUTER, **worker_settings)  # --forwarded-allow-ips defaults to 127.0.0.1,::1
    with Conn(server.port) as conn:
        env = environ_over(conn, FORWARDED, host="example.com")
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.9", "")
        assert env["wsgi.url_scheme"] == "https"
        # SERVER_PORT stays the port the request came in on (RFC 3875 §4.1.15):
        # neither the proxy's scheme nor Host's port changes it.
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", str(server.port))
        env = environ_over(conn, FORWARDED, host="example.com:8443")
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", str(server.port))
        env = environ_over(conn, 'Forwarded: for="[2001:db8::1]:4711";proto=https\r\n')
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"], env["wsgi.url_scheme"]) == ("2001:db8::1", "4711", "https")
        plain = environ_over(conn)  # the next request on the connection forwards nothing
        assert plain["REMOTE_ADDR"] == "127.0.0.1" and plain["wsgi.url_scheme"] == "http"
        assert plain["REMOTE_PORT"] == str(conn.sock.getsockname()[1])


def test_untrusted_peer_cannot_change_the_client_or_scheme(test_app):
    server = test_app(ROUTER)
    with Conn(server.port, source="127.0.0.2") as conn:
        env = environ_over(conn, FORWARDED + "Forwarded: for=192.0.2.60;proto=https\r\n", host="example.com")
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("127.0.0.2", str(conn.sock.getsockname()[1]))
        assert env["wsgi.url_scheme"] == "http" and env["SERVER_PORT"] == str(server.port)
        # passed through as the plain headers they are
        assert env["HTTP_X_FORWARDED_FOR"] == "198.51.100.1, 203.0.113.9"
        assert env["HTTP_X_FORWARDED_PROTO"] == "https"
        assert env["HTTP_FORWARDED"] == "for=192.0.2.60;proto=https"


def test_listed_untrusted_network_and_trust_everyone(test_app):
    server = test_app(ROUTER, forwarded_allow_ips="127.0.0.2")
    with Conn(server.port, source="127.0.0.2") as conn:
        assert environ_over(conn, FORWARDED)["REMOTE_ADDR"] == "203.0.113.9"
    with Conn(server.port) as conn:  # 127.0.0.1 is no longer listed
        assert environ_over(conn, FORWARDED)["REMOTE_ADDR"] == "127.0.0.1"


def test_disagreeing_scheme_headers_are_a_bad_request(test_app):
    server = test_app(ROUTER)
    with Conn(server.port) as conn:
        resp = conn.request(get("/environ_json", extra="X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n"))
        assert resp.status == 400
    with Conn(server.port, source="127.0.0.2") as conn:  # from an untrusted peer, mere headers
        env = environ_over(conn, "X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n")
        assert env["wsgi.url_scheme"] == "http"


def test_forwarded_scheme_on_a_tls_listener(test_app, certs):
    server = tls_server(test_app, certs)
    env = requests.get(f"{https_url(server)}/environ_json", verify=certs["ca.pem"], timeout=10,
                       headers={"X-Forwarded-For": "203.0.113.9"}).json()
    assert env["REMOTE_ADDR"] == "203.0.113.9" and env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on"


# --- unix sockets


def test_unix_socket_remote_addr(test_app, tmp_path):
    path = str(tmp_path / "app.sock")
    test_app(ROUTER, bind=f"unix:{path}")
    with Conn(0, family=socket.AF_UNIX, address=path) as conn:
        env = environ_over(conn)
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("127.0.0.1", "")  # a local peer
        env = environ_over(conn, FORWARDED)  # a unix-socket peer is a trusted proxy
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.9", "https")
        assert conn.request(post("/length", b"x" * 100_000)).body == b"100000"
