"""TLS: the context built from the settings, and the worker's handshake, over real sockets."""

import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest
from tlscerts import make_certs

from prefork.settings import ConfigError, Layer, build_config
from prefork.tls import (
    HandshakeFailed,
    TLSConnection,
    TLSSetupError,
    build_context,
    check_settings,
    describe,
    distinguished_name,
    handshake,
    tls_environ,
)

BEAT = 0.1  # the beat interval of these tests' "worker"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    return make_certs(tmp_path_factory.mktemp("certs"))


def config(**settings):
    cfg = build_config([Layer("command line", settings)], {})
    check_settings(cfg)
    return cfg


def server_context(certs, **settings):
    return build_context(config(certfile=certs["server.pem"], keyfile=certs["server.key"], **settings))


def client_context(certs, cert=None):
    ctx = ssl.create_default_context(cafile=certs["ca.pem"])
    if cert:
        ctx.load_cert_chain(certs[f"{cert}.pem"], certs[f"{cert}.key"])
    return ctx


class Accepted:
    """A listening socket set up as the master sets it (SO_RCVTIMEO of one beat),
    a client function running in a thread, and the accepted connection."""

    def __init__(self, client):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, int(BEAT * 1e6)))
        self.port = self.listener.getsockname()[1]
        self.result = {}
        self.thread = threading.Thread(target=self._run, args=(client,), daemon=True)
        self.thread.start()
        self.listener.settimeout(10)
        self.conn, _ = self.listener.accept()

    def _run(self, client):
        try:
            self.result["value"] = client(self.port)
        except Exception as exc:
            self.result["error"] = exc

    def client_result(self):
        self.thread.join(10)
        assert not self.thread.is_alive()
        if "error" in self.result:
            raise self.result["error"]
        return self.result.get("value")

    def close(self):
        self.conn.close()
        self.listener.close()


def tls_client(certs, send=b"", cert=None, read=True, **kw):
    def run(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_context(certs, cert, **kw).wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(send)
                return tls.recv(65536) if read else tls.version()
    return run


def test_no_certfile_no_context():
    assert build_context(config()) is None


def test_handshake_and_exchange(certs):
    ctx = server_context(certs)
    beats = []
    pair = Accepted(tls_client(certs, b"ping"))
    try:
        conn = handshake(ctx, pair.conn, 5, lambda: beats.append(1), BEAT)
        assert isinstance(conn, TLSConnection)
        assert conn.recv(100) == b"ping"
        conn.sendall(b"pong")
        assert pair.client_result() == b"pong"
        env = tls_environ(conn)
        assert env["HTTPS"] == "on" and env["SSL_PROTOCOL"].startswith("TLSv1.")
        assert env["SSL_CLIENT_VERIFY"] == "NONE" and "prefork.peer_certificate" not in env
        assert conn.selected_alpn_protocol() is None  # the client offered none
        conn.close()
    finally:
        pair.close()


def test_reads_wait_one_beat_then_raise_blocking_io_error(certs):
    """The worker's read loops beat on BlockingIOError, as with plain sockets."""
    ctx = server_context(certs)

    def slow_client(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_context(certs).wrap_socket(raw, server_hostname="localhost") as tls:
                time.sleep(4 * BEAT)
                tls.sendall(b"late")
                return tls.recv(10)

    pair = Accepted(slow_client)
    try:
        conn = handshake(ctx, pair.conn, 5, lambda: None, BEAT)
        stalls = 0
        started = time.monotonic()
        while True:
            try:
                data = conn.recv(100)
                break
            except BlockingIOError:
                stalls += 1
        assert data == b"late" and stalls >= 2
        assert time.monotonic() - started < 2
        conn.sendall(b"ok")
        assert pair.client_result() == b"ok"
        conn.close()
    finally:
        pair.close()


def test_sendall_waits_for_a_slow_reader(certs):
    """Sends that stall longer than a beat go on, as on a plain blocking socket."""
    ctx = server_context(certs)
    payload = b"x" * (2 << 20)  # far more than the socket buffers hold

    def slow_reader(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_context(certs).wrap_socket(raw, server_hostname="localhost") as tls:
                time.sleep(5 * BEAT)
                got = 0
                while got < len(payload):
                    chunk = tls.recv(1 << 16)
                    if not chunk:
                        break
                    got += len(chunk)
                return got

    pair = Accepted(slow_reader)
    try:
        pair.conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        conn = handshake(ctx, pair.conn, 5, lambda: None, BEAT)
        started = time.monotonic()
        conn.sendall(payload)
        assert time.monotonic() - started > 3 * BEAT  # it did have to wait
        assert pair.client_result() == len(payload)
        conn.close()
    finally:
        pair.close()


def test_silent_client_times_out_and_beats(certs):
    ctx = server_context(certs)
    release = threading.Event()

    def silent(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            release.wait(10)

    beats = []
    pair = Accepted(silent)
    try:
        started = time.monotonic()
        with pytest.raises(HandshakeFailed, match=r"no TLS handshake within 0.6 s"):
            handshake(ctx, pair.conn, 0.6, lambda: beats.append(1), BEAT)
        assert 0.5 < time.monotonic() - started < 2
        assert len(beats) >= 3  # the worker stays alive for its master while it waits
    finally:
        release.set()
        pair.client_result()
        pair.close()


def test_plain_http_gets_a_clean_400(certs):
    ctx = server_context(certs)

    def plain(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    return data
                data += chunk

    pair = Accepted(plain)
    try:
        with pytest.raises(HandshakeFailed, match="plain HTTP request on the TLS port") as info:
            handshake(ctx, pair.conn, 5, lambda: None, BEAT)
        assert info.value.plain_http
        answer = pair.client_result()
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert answer.endswith(b"This port speaks HTTPS: use an https:// URL.\n")
    finally:
        pair.close()


def test_client_that_hangs_up_mid_handshake(certs):
    ctx = server_context(certs)

    def rude(port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"\x16\x03\x01\x00\x05hello")  # the start of a ClientHello, then gone

    pair = Accepted(rude)
    try:
        pair.client_result()
        with pytest.raises(HandshakeFailed) as info:
            handshake(ctx, pair.conn, 5, lambda: None, BEAT)
        assert not info.value.plain_http
    finally:
        pair.close()


def test_failed_handshake_closes_the_descriptor(certs):
    ctx = server_context(certs)
    pair = Accepted(lambda port: socket.create_connection(("127.0.0.1", port), timeout=10).close())
    try:
        pair.client_result()
        fd = pair.conn.fileno()
        with pytest.raises(HandshakeFailed):
            handshake(ctx, pair.conn, 5, lambda: None, BEAT)
        with pytest.raises(OSError):
            socket.socket(fileno=fd).getsockname()  # nothing left open in the worker
    finally:
        pair.close()


@pytest.mark.parametrize("client_cert, ok", [(None, False), ("client", True), ("rogue", False)])
def test_client_certificate_required(certs, client_cert, ok):
    ctx = server_context(certs, cert_reqs=2, ca_certs=certs["ca.pem"])
    pair = Accepted(tls_client(certs, b"hi", cert=client_cert))
    try:
        if not ok:
            with pytest.raises(HandshakeFailed):
                handshake(ctx, pair.conn, 5, lambda: None, BEAT)
            with pytest.raises((ssl.SSLError, OSError)):
                pair.client_result()
            return
        conn = handshake(ctx, pair.conn, 5, lambda: None, BEAT)
        env = tls_environ(conn)
        assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
        assert env["SSL_CLIENT_S_DN"] == "CN=alice,O=Example\\, Inc.,C=FR"
        assert env["prefork.peer_certificate"]["subject"][-1] == (("commonName", "alice"),)
        conn.sendall(b"welcome")
        assert pair.client_result() == b"welcome"
        conn.close()
    finally:
        pair.close()


@pytest.mark.parametrize("client_cert", [None, "client"])
def test_client_certificate_optional(certs, client_cert):
    ctx = server_context(certs, cert_reqs=1, ca_certs=certs["ca.pem"])
    pair = Accepted(tls_client(certs, b"hi", cert=client_cert))
    try:
        conn = handshake(ctx, pair.conn, 5, lambda: None, BEAT)
        assert tls_environ(conn)["SSL_CLIENT_VERIFY"] == ("SUCCESS" if client_cert else "NONE")
        conn.sendall(b"ok")
        assert pair.client_result() == b"ok"
        conn.close()
    finally:
        pair.close()


def test_minimum_version(certs):
    ctx = server_context(certs, ssl_version="TLSv1_3")

    def old_client(port):
        cctx = client_context(certs)
        cctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with cctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version()

    pair = Accepted(old_client)
    try:
        with pytest.raises(HandshakeFailed, match="unsupported protocol|version"):
            handshake(ctx, pair.conn, 5, lambda: None, BEAT)
        with pytest.raises(ssl.SSLError):
            pair.client_result()
    finally:
        pair.close()


def test_certificate_and_key_in_one_file(certs):
    ctx = build_context(config(certfile=certs["combined.pem"]))
    pair = Accepted(tls_client(certs, read=False))
    try:
        conn = handshake(ctx, pair.conn, 5, lambda: None, BEAT)
        assert pair.client_result().startswith("TLSv1.")
        conn.close()
    finally:
        pair.close()


@pytest.mark.parametrize("settings, message", [
    (dict(certfile="server.pem", keyfile="client.key"), "the key .*client.key does not belong to the certificate"),
    (dict(certfile="garbage.pem", keyfile="server.key"), "cannot use the certificate .*garbage.pem"),
    (dict(certfile="server.pem"), "cannot use the certificate .*server.pem"),
    (dict(certfile="server.pem", keyfile="encrypted.key"), "is encrypted; prefork cannot ask for its passphrase"),
    (dict(certfile="server.pem", keyfile="server.key", cert_reqs=2, ca_certs="garbage.pem"),
     "cannot use --ca-certs .*garbage.pem"),
])
def test_unusable_files_are_one_line_errors(certs, settings, message):
    settings = {k: certs[v] if isinstance(v, str) and v in certs else v for k, v in settings.items()}
    with pytest.raises(TLSSetupError, match=message) as info:
        build_context(config(**settings))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("settings, message", [
    (dict(keyfile="server.key"), "--keyfile has no effect without --certfile"),
    (dict(ca_certs="ca.pem"), "--ca-certs has no effect without --certfile"),
    (dict(cert_reqs=2), "--cert-reqs has no effect without --certfile"),
    (dict(certfile="server.pem", keyfile="server.key", cert_reqs=2), "--cert-reqs 2 .* needs\n?.*--ca-certs"),
])
def test_settings_that_do_not_fit_together(certs, settings, message):
    settings = {k: certs[v] if isinstance(v, str) and v in certs else v for k, v in settings.items()}
    with pytest.raises(ConfigError, match=message):
        config(**settings)


def test_describe(certs):
    cfg = config(certfile=certs["server.pem"], keyfile=certs["server.key"], ssl_version="TLSv1_3",
                 cert_reqs=2, ca_certs=certs["ca.pem"])
    assert describe(cfg) == (f"TLS: serving HTTPS with {certs['server.pem']} (TLS 1.3 or newer; "
                             "client certificates required)")


def test_distinguished_name():
    subject = ((("countryName", "FR"),), (("organizationName", "A+B, \"C\""),),
               (("commonName", " alice "), ("userId", "42")))
    assert distinguished_name(subject) == 'CN=\\ alice\\ +UID=42,O=A\\+B\\, \\"C\\",C=FR'


# --- the server process


def run_prefork(args, cwd, timeout=20):
    return subprocess.run([sys.executable, "-m", "prefork", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True)


def test_bad_certificate_stops_the_server_at_start(certs, tmp_path):
    from conftest import APPS

    proc = run_prefork(["-b", "127.0.0.1:0", "--certfile", certs["server.pem"], "--keyfile",
                        certs["client.key"], "basic:hello"], APPS)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "does not belong to the certificate" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_keyfile_without_certfile_is_a_settings_error(certs):
    from conftest import APPS

    proc = run_prefork(["--keyfile", certs["server.key"], "basic:hello"], APPS)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "prefork: error: --keyfile has no effect without --certfile"


def test_plain_http_answer_on_a_descriptor_past_1023():
    # Regression: the lingering read after the plain-HTTP answer waited with
    # select(), which refuses descriptors of 1024 and above (a busy worker's).
    import fcntl
    import resource

    from prefork.tls import PLAIN_HTTP_RESPONSE, _answer_plain_http

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"needs descriptors above 1024, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
    server_end, client = socket.socketpair()
    try:
        high = socket.socket(fileno=fcntl.fcntl(server_end.fileno(), fcntl.F_DUPFD, 1500))
        server_end.close()
        assert high.fileno() >= 1024
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).wrap_socket(
            high, server_side=True, do_handshake_on_connect=False)
        client.settimeout(10)
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        _answer_plain_http(tls)  # raised ValueError: filedescriptor out of range
        received = b""
        while chunk := client.recv(65536):
            received += chunk
        assert received == PLAIN_HTTP_RESPONSE
        tls.close()
    finally:
        client.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
