"""From accept() to the first request: the PROXY header, TLS, and who the client is,
over real TCP and unix sockets set up as the master sets them."""

import shutil
import socket
import ssl
import struct
import threading
import time

import pytest
from tlscerts import make_certs

from prefork.http.proxy import V2_SIGNATURE
from prefork.settings import Layer, build_config
from prefork.tls import build_context
from prefork.workers.ingress import ConnectionRejected, Ingress

BEAT = 0.1
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n"
V1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 4711 443\r\n"
V2 = V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes([198, 51, 100, 7, 10, 0, 0, 1]) + struct.pack("!HH", 4711, 443)


def ingress(ssl_context=None, **settings):
    beats = []
    cfg = build_config([Layer("command line", settings)], {})
    return Ingress(cfg, ssl_context, lambda: beats.append(1), BEAT), beats


class Link:
    """A listener (SO_RCVTIMEO of one beat, as the master sets it) and one
    client running ``client(connect)`` in a thread."""

    def __init__(self, client, unix_path=None):
        if unix_path:
            self.listener = socket.socket(socket.AF_UNIX)
            self.listener.bind(unix_path)
            address = unix_path
        else:
            self.listener = socket.socket()
            self.listener.bind(("127.0.0.1", 0))
            address = self.listener.getsockname()
        self.listener.listen()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, int(BEAT * 1e6)))
        family = socket.AF_UNIX if unix_path else socket.AF_INET
        self.done = threading.Event()
        self.result = {}

        def connect():
            sock = socket.socket(family)
            sock.settimeout(10)
            sock.connect(address)
            return sock

        def run():
            try:
                self.result["value"] = client(connect)
            except Exception as exc:
                self.result["error"] = exc
            finally:
                self.done.set()

        threading.Thread(target=run, daemon=True).start()
        self.listener.settimeout(10)
        self.sock, self.addr = self.listener.accept()

    def client_result(self):
        assert self.done.wait(10)
        if "error" in self.result:
            raise self.result["error"]
        return self.result.get("value")

    def close(self):
        self.sock.close()
        self.listener.close()


def sends(*pieces, pause=0.0, then_read=False):
    def client(connect):
        with connect() as sock:
            for piece in pieces:
                sock.sendall(piece)
                time.sleep(pause)
            if then_read:
                return sock.recv(100)
            time.sleep(0.2)
    return client


def read_exactly(sock, size):
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def test_plain_connection_is_untouched():
    front, _ = ingress()
    link = Link(sends(REQUEST))
    try:
        conn = front.open(link.sock, link.addr, 5)
        assert conn.sock is link.sock and conn.peer == ("127.0.0.1", str(link.addr[1]))
        assert conn.environ == {} and not conn.is_tls and conn.proxy is None
        assert read_exactly(conn.sock, len(REQUEST)) == REQUEST
        # 127.0.0.1 is a trusted proxy by default: its forwarded headers count
        assert front.client(conn, [("X-Forwarded-For", "6.6.6.6")]) == ("6.6.6.6", "", "http")
    finally:
        link.close()


@pytest.mark.parametrize("header", [V1, V2], ids=["v1", "v2"])
def test_proxy_header_names_the_client(header):
    front, _ = ingress(proxy_protocol=True)
    link = Link(sends(header + REQUEST))
    try:
        conn = front.open(link.sock, link.addr, 5)
        assert conn.peer == ("198.51.100.7", "4711")
        assert conn.environ == {"PROXY_PROTOCOL": "TCP4", "PROXY_ADDR": "10.0.0.1", "PROXY_PORT": "443"}
        assert read_exactly(conn.sock, len(REQUEST)) == REQUEST  # not a byte more was taken
        # the client is not a trusted proxy: its X-Forwarded-* are only headers
        assert front.client(conn, [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "https")]) == \
            ("198.51.100.7", "4711", "http")
    finally:
        link.close()


def test_proxy_header_in_pieces():
    front, _ = ingress(proxy_protocol=True)
    link = Link(sends(V1[:9], V1[9:30], V1[30:] + REQUEST, pause=0.05))
    try:
        conn = front.open(link.sock, link.addr, 5)
        assert conn.peer == ("198.51.100.7", "4711")
        assert read_exactly(conn.sock, len(REQUEST)) == REQUEST
    finally:
        link.close()


def test_local_command_keeps_the_real_peer():
    front, _ = ingress(proxy_protocol=True)
    link = Link(sends(V2_SIGNATURE + b"\x20\x00\x00\x00" + REQUEST))
    try:
        conn = front.open(link.sock, link.addr, 5)
        assert conn.peer == ("127.0.0.1", str(link.addr[1])) and conn.proxy.command == "LOCAL"
        assert conn.environ == {}
    finally:
        link.close()


@pytest.mark.parametrize("data, message", [
    (REQUEST, "does not start with a PROXY protocol header"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n" + REQUEST, "out of range"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n" + REQUEST, "not ended by CRLF"),
    (b"PROXY TCP4 1.2.3.4", "closed before sending its PROXY header"),
    (b"", "closed before sending its PROXY header"),
])
def test_bad_or_missing_proxy_header_is_rejected(data, message):
    front, _ = ingress(proxy_protocol=True)

    def client(connect):
        with connect() as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            time.sleep(0.3)

    link = Link(client)
    try:
        with pytest.raises(ConnectionRejected, match=message):
            front.open(link.sock, link.addr, 5)
    finally:
        link.close()


def test_silent_peer_is_rejected_at_the_deadline_and_the_worker_beats():
    front, beats = ingress(proxy_protocol=True)
    release = threading.Event()
    link = Link(lambda connect: (connect(), release.wait(10)))
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionRejected, match="no complete PROXY header in time"):
            front.open(link.sock, link.addr, 0.5)
        assert 0.4 < time.monotonic() - started < 2 and len(beats) >= 3
    finally:
        release.set()
        link.close()


def test_peers_not_allowed_send_plain_http():
    """A PROXY header from a peer outside --proxy-allow-from is never believed."""
    front, _ = ingress(proxy_protocol=True, proxy_allow_ips="10.0.0.0/8")
    link = Link(sends(V1 + REQUEST))
    try:
        conn = front.open(link.sock, link.addr, 5)
        assert conn.peer == ("127.0.0.1", str(link.addr[1])) and conn.proxy is None
        assert read_exactly(conn.sock, len(V1)) == V1  # left for the HTTP parser to refuse
    finally:
        link.close()


def test_unix_socket_peers_must_send_the_header(tmp_path):
    front, _ = ingress(proxy_protocol=True, proxy_allow_ips="10.0.0.0/8")
    link = Link(sends(V1 + REQUEST), unix_path=str(tmp_path / "s.sock"))
    try:
        conn = front.open(link.sock, link.addr, 5)
        assert conn.peer == ("198.51.100.7", "4711")
    finally:
        link.close()


def test_unix_socket_peer_without_proxy_protocol(tmp_path):
    front, _ = ingress()
    link = Link(sends(REQUEST), unix_path=str(tmp_path / "s.sock"))
    try:
        conn = front.open(link.sock, link.addr, 5)
        assert conn.peer is None
        assert front.client(conn, []) == ("127.0.0.1", "", "http")
        assert front.client(conn, [("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-Proto", "https")]) == \
            ("198.51.100.7", "", "https")
    finally:
        link.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_proxy_header_then_tls(certs):
    """HAProxy's send-proxy in front of a TLS listener: the header comes first, in clear."""
    cfg = build_config([Layer("command line", {"certfile": certs["server.pem"], "keyfile": certs["server.key"]})], {})
    front, _ = ingress(build_context(cfg), proxy_protocol=True)

    def client(connect):
        ctx = ssl.create_default_context(cafile=certs["ca.pem"])
        with connect() as raw:
            raw.sendall(V2)
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(REQUEST)
                return tls.recv(100)

    link = Link(client)
    try:
        conn = front.open(link.sock, link.addr, 5)
        assert conn.is_tls and conn.peer == ("198.51.100.7", "4711")
        assert conn.environ["PROXY_ADDR"] == "10.0.0.1" and conn.environ["HTTPS"] == "on"
        assert read_exactly(conn.sock, len(REQUEST)) == REQUEST
        assert front.client(conn, []) == ("198.51.100.7", "4711", "https")
        conn.sock.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        assert link.client_result().startswith(b"HTTP/1.1 204")
        conn.sock.close()
    finally:
        link.close()


def test_tls_handshake_failure_is_a_rejection(certs):
    cfg = build_config([Layer("command line", {"certfile": certs["server.pem"], "keyfile": certs["server.key"]})], {})
    front, _ = ingress(build_context(cfg))
    link = Link(sends(REQUEST, then_read=True))
    try:
        with pytest.raises(ConnectionRejected, match="plain HTTP request on the TLS port"):
            front.open(link.sock, link.addr, 5)
        assert link.client_result().startswith(b"HTTP/1.1 400 Bad Request")
    finally:
        link.close()
