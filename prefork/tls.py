# TLS termination. The master builds one SSLContext from the settings at
# start, before any fork (and again on HUP, so a renewed certificate needs no
# restart): a bad certificate or key stops the server with a one-line error,
# and workers that drop privileges never need to read the key. A worker wraps
# each connection right after accept() and completes the handshake within a
# deadline, beating its heartbeat while it waits, so a client that connects and
# says nothing holds a worker no longer than a slow request head would.
#
# The wrapped connection is a ``TLSConnection``: it behaves like the worker's
# plain sockets, where a read that waits one beat interval raises
# BlockingIOError (the worker beats and reads again) and ``sendall`` blocks
# until everything is sent.
from __future__ import annotations

import errno
import os
import select
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from .settings import Config, ConfigError

# Settings that mean nothing without --certfile.
TLS_ONLY = ("keyfile", "ca_certs", "cert_reqs", "ciphers", "ssl_version", "do_handshake_on_connect")
MINIMUM_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1, "TLSv1_1": ssl.TLSVersion.TLSv1_1,
    "TLSv1_2": ssl.TLSVersion.TLSv1_2, "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}
VERIFY_MODES = {0: ssl.CERT_NONE, 1: ssl.CERT_OPTIONAL, 2: ssl.CERT_REQUIRED}

# What a client speaking plain HTTP to the TLS port reads (OpenSSL recognises
# "GET ", "POST", "HEAD", "PUT " in place of a TLS record).
PLAIN_HTTP_BODY = b"This port speaks HTTPS: use an https:// URL.\n"
PLAIN_HTTP_RESPONSE = (
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(PLAIN_HTTP_BODY), PLAIN_HTTP_BODY)
)
# After that answer, bytes still unread would make close() send a reset that
# can destroy the answer before the client reads it: read some of them first.
LINGER_BYTES = 65536
LINGER_SECONDS = 1.0


class TLSSetupError(Exception):
    """The certificate, key or CA file cannot be used; the message is one line."""


class HandshakeFailed(Exception):
    """A client did not complete the TLS handshake; ``detail`` says why, in one line."""

    def __init__(self, detail: str, plain_http: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.plain_http = plain_http


def check_settings(cfg: Config) -> None:
    """Cross-setting rules, raised as ConfigError (a settings error: exit 2)."""
    if cfg.certfile is None:
        for name in TLS_ONLY:
            if cfg.sources.get(name, "default") != "default":
                raise ConfigError(f"{_flag(name)} has no effect without --certfile")
        return
    if cfg.cert_reqs and cfg.ca_certs is None:
        raise ConfigError(f"--cert-reqs {cfg.cert_reqs} verifies client certificates and needs "
                          "--ca-certs (the authorities that sign them)")


def _flag(name: str) -> str:
    from .settings import BY_NAME

    return BY_NAME[name].option_name


def build_context(cfg: Config) -> ssl.SSLContext | None:
    """The server's SSLContext, or None when TLS is off. Raises TLSSetupError."""
    if cfg.certfile is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.sslsocket_class = TLSConnection
    if cfg.ssl_version in MINIMUM_VERSIONS:
        ctx.minimum_version = MINIMUM_VERSIONS[cfg.ssl_version]
    if cfg.ciphers:
        ctx.set_ciphers(cfg.ciphers)
    _load_chain(ctx, cfg.certfile, cfg.keyfile)
    ctx.verify_mode = VERIFY_MODES[cfg.cert_reqs]
    if cfg.ca_certs:
        try:
            ctx.load_verify_locations(cafile=cfg.ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise TLSSetupError(f"cannot use --ca-certs {cfg.ca_certs}: {_reason(exc)}") from None
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _load_chain(ctx: ssl.SSLContext, certfile: str, keyfile: str | None) -> None:
    def no_passphrase() -> str:
        raise TLSSetupError(f"the key in {keyfile or certfile} is encrypted; prefork cannot ask "
                            "for its passphrase (decrypt it: openssl pkey -in KEY -out KEY)")

    try:
        ctx.load_cert_chain(certfile, keyfile, password=no_passphrase)
    except TLSSetupError:
        raise
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSSetupError(f"the key {keyfile} does not belong to the certificate {certfile}") from None
        what = f"certificate {certfile}" + (f" with key {keyfile}" if keyfile else "")
        raise TLSSetupError(f"cannot use the {what}: {_reason(exc)}") from None
    except OSError as exc:
        raise TLSSetupError(f"cannot read {exc.filename or certfile}: {exc.strerror}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        hints = {
            "NO_START_LINE": "not a PEM file",
            "PEM_LIB": "not a PEM certificate and key (is the key missing? see --keyfile)",
            "CA_MD_TOO_WEAK": "signed with a digest OpenSSL refuses",
            "EE_KEY_TOO_SMALL": "the key is too small for OpenSSL's security level",
        }
        return hints.get(exc.reason, exc.reason.replace("_", " ").lower())
    return getattr(exc, "strerror", None) or str(exc)


def describe(cfg: Config) -> str:
    """One log line saying how TLS is set up."""
    minimum = cfg.ssl_version if cfg.ssl_version != "TLS" else "TLSv1_2"
    clients = {0: "not asked for", 1: "verified if sent", 2: "required"}[cfg.cert_reqs]
    return (f"TLS: serving HTTPS with {cfg.certfile} (TLS {minimum.removeprefix('TLSv').replace('_', '.')}"
            f" or newer; client certificates {clients})")


class TLSConnection(ssl.SSLSocket):
    """An accepted TLS connection that waits like the worker's plain sockets.

    The worker reads with buffers larger than a TLS record (16 KiB), so each
    read takes a whole record and OpenSSL never holds decrypted bytes between
    reads: ``poll()`` on the socket tells whether the client sent more.
    """

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if flags:
            return self._peek(buflen)
        try:
            return super().recv(buflen, flags)
        except (TimeoutError, ssl.SSLWantReadError):
            raise BlockingIOError(errno.EAGAIN, "no data within a beat interval") from None

    def _peek(self, buflen: int) -> bytes:
        """``recv(n, MSG_PEEK | MSG_DONTWAIT)``, the worker's last look before it
        closes an idle connection: TLS cannot peek at plaintext, so this looks at
        the socket itself. Returns the raw bytes waiting there (a TLS record) or
        b"" at the client's EOF; raises BlockingIOError when nothing is there."""
        poller = select.poll()
        poller.register(self.fileno(), select.POLLIN)
        if not poller.poll(0):
            raise BlockingIOError(errno.EAGAIN, "nothing waiting")
        return socket.socket.recv(self, buflen, socket.MSG_PEEK)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        try:
            return super().recv_into(buffer, nbytes, flags)
        except (TimeoutError, ssl.SSLWantReadError):
            raise BlockingIOError(errno.EAGAIN, "no data within a beat interval") from None

    def sendall(self, data: Any, flags: int = 0) -> None:
        # A client that does not read stalls us here as it would on a plain
        # socket; the heartbeat then goes stale and --timeout applies.
        with memoryview(data) as view, view.cast("B") as raw:
            sent = 0
            while sent < len(raw):
                try:
                    sent += self.send(raw[sent:], flags)
                except (TimeoutError, ssl.SSLWantWriteError):
                    continue


def handshake(
    ctx: ssl.SSLContext,
    conn: Any,
    timeout: float,
    beat: Callable[[], None],
    interval: float,
) -> TLSConnection:
    """Wrap an accepted socket and complete the server handshake.

    Waits at most ``timeout`` seconds, calling ``beat`` every ``interval``
    seconds of waiting. The returned connection's reads raise BlockingIOError
    after ``interval`` seconds without data. On failure the connection is
    closed and HandshakeFailed says why.
    """
    deadline = time.monotonic() + timeout
    tls: TLSConnection = ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)  # type: ignore[assignment]
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HandshakeFailed(f"no TLS handshake within {timeout:g} s")
            tls.settimeout(min(interval, remaining))
            try:
                tls.do_handshake()
                break
            except (TimeoutError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                beat()
    except HandshakeFailed:
        tls.close()
        raise
    except ssl.SSLError as exc:
        plain = exc.reason == "HTTP_REQUEST"
        if plain:
            _answer_plain_http(tls)
        tls.close()
        raise HandshakeFailed(_handshake_error(exc), plain_http=plain) from None
    except OSError as exc:
        tls.close()
        raise HandshakeFailed(f"connection lost during the TLS handshake ({exc.strerror or exc})") from None
    tls.settimeout(interval)
    return tls


def _handshake_error(exc: ssl.SSLError) -> str:
    if exc.reason == "HTTP_REQUEST":
        return "plain HTTP request on the TLS port"
    if isinstance(exc, ssl.SSLEOFError) or exc.reason in ("UNEXPECTED_EOF_WHILE_READING", None):
        return "client closed the connection during the TLS handshake"
    if exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "client sent no certificate (--cert-reqs 2)"
    return f"TLS handshake failed: {exc.reason.replace('_', ' ').lower()}"


def _answer_plain_http(tls: ssl.SSLSocket) -> None:
    fd = tls.fileno()
    try:
        os.write(fd, PLAIN_HTTP_RESPONSE)
        tls.shutdown(socket.SHUT_WR)  # the client sees the end of our answer
        deadline = time.monotonic() + LINGER_SECONDS
        poller = select.poll()  # not select(): the descriptor may be 1024 or above
        poller.register(fd, select.POLLIN)
        drained = 0
        while drained < LINGER_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                break
            data = os.read(fd, 4096)
            if not data:
                break
            drained += len(data)
    except OSError:
        pass


def tls_environ(tls: ssl.SSLSocket) -> dict[str, Any]:
    """Per-connection environ keys: mod_ssl's names, plus the peer certificate."""
    cipher = tls.cipher()
    cert = tls.getpeercert()
    environ: dict[str, Any] = {
        "HTTPS": "on",
        "SSL_PROTOCOL": tls.version() or "",
        "SSL_CIPHER": cipher[0] if cipher else "",
        "SSL_CLIENT_VERIFY": "SUCCESS" if cert else "NONE",
    }
    if cert:
        environ["SSL_CLIENT_S_DN"] = distinguished_name(cert.get("subject", ()))
        environ["prefork.peer_certificate"] = cert
    return environ


SHORT_NAMES = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
    "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
    "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID",
}


def distinguished_name(subject: Any) -> str:
    """RFC 4514 text of a ``getpeercert()`` subject: ``CN=alice,O=Example,C=FR``."""
    rdns = []
    for rdn in reversed(subject):
        rdns.append("+".join(f"{SHORT_NAMES.get(k, k)}={_escape_dn(v)}" for k, v in rdn))
    return ",".join(rdns)


def _escape_dn(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out
