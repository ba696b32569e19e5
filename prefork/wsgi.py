# The WSGI bridge (PEP 3333) between parsed requests and the application.
# Strategy: the environ is a copy of a base dict prepared once per worker and
# listener, filled with the few per-request keys; ``wsgi.input`` follows the
# body's framing and reads through a ``recv`` callable the worker supplies;
# ``Response`` sends what the application returns, the head and a one-chunk
# body in a single ``sendall``, with the framing and persistence decided by
# the connection core (``http/connection.py``). No socket is created or
# configured here: the worker hands in the callables that do I/O, and a
# ``keep_check`` that says, when the head is written, whether the connection
# may stay open. Nothing here is HTTP/1.1 beyond what PEP 3333 requires.
from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import unquote_to_bytes

from . import SERVER_SOFTWARE
from .http import response as http_response
from .http.body import ChunkedBody, LengthBody
from .http.connection import Connection
from .http.errors import HTTPError
from .http.forwarded import Client
from .http.request import Request
from .http.response import InvalidResponse

ExcInfo = tuple[type[BaseException], BaseException, TracebackType]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Recv = Callable[[int], bytes]
SendAll = Callable[[bytes], Any]
# sendfile(head, fd, offset, count) -> bytes of the file sent; the head is
# sent first, in the same TCP segment as the file's start when possible.
SendFile = Callable[[bytes, int, int, int], int]
# sendmsg(buffers) -> bytes sent: one write from several buffers (socket.sendmsg).
SendMsg = Callable[[tuple[bytes, bytes]], int]

READ_SIZE = 65536
# A body piece at least this large is not copied behind its head into one
# buffer: both go out in one vectored write when the worker provides sendmsg
# (for 1 MiB that saves a 35 µs copy; below ~16 KiB the copy is cheaper).
JOIN_LIMIT = 16 * 1024


class FileWrapper:
    """``wsgi.file_wrapper``: lets the server send a file with ``os.sendfile``."""

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return bytes(data)
        raise StopIteration

    def fileno(self) -> int | None:
        """The descriptor of a regular file, or None (then blocks are read)."""
        try:
            fd = self.filelike.fileno()
            if isinstance(fd, int) and fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
        except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
            pass
        return None


class Input:
    """``wsgi.input``: the request body, bounded by its framing.

    Reads go through ``recv``; payload the application has not read yet
    waits in a buffer. A protocol error met while reading is kept in
    ``error``: it decides the response status, whatever the application
    made of the exception.
    """

    __slots__ = ("_recv", "_body", "_buf", "_continue", "error")

    def __init__(
        self,
        recv: Recv,
        body: LengthBody | ChunkedBody,
        initial: bytes,
        send_continue: Callable[[], None] | None,
    ) -> None:
        self._recv = recv
        self._body = body
        self._buf = bytearray()
        self.error: HTTPError | None = None
        # Asked before the first read that needs the network; the connection
        # core decides whether "100 Continue" is due (RFC 9110 §10.1.1).
        self._continue = send_continue
        if initial:
            try:
                self._buf += body.feed(initial)
            except HTTPError as exc:
                self.error = exc

    @property
    def body(self) -> LengthBody | ChunkedBody:
        return self._body

    def _more(self) -> bytes | None:
        """More payload from the network (maybe b""); None once the body is complete."""
        if self.error is not None:
            raise self.error
        body = self._body
        if body.done:
            return None
        if self._continue is not None:
            send, self._continue = self._continue, None
            send()
        try:
            data = self._recv(READ_SIZE)
            if not data:
                body.eof()
            return body.feed(data)
        except HTTPError as exc:
            self.error = exc
            raise

    def read(self, size: int | None = -1) -> bytes:
        buf = self._buf
        if size is None or size < 0:
            parts = [bytes(buf)] if buf else []
            buf.clear()
            while (more := self._more()) is not None:
                if more:
                    parts.append(more)
            return b"".join(parts) if len(parts) != 1 else parts[0]
        while len(buf) < size:
            more = self._more()
            if more is None:
                break
            if not buf and len(more) == size:
                return more  # a whole read straight from the network, never copied
            buf += more
        if len(buf) <= size:
            data = bytes(buf)
            buf.clear()
            return data
        with memoryview(buf) as view:
            data = bytes(view[:size])  # one copy; buf[:size] would make two
        del buf[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        buf = self._buf
        limit = -1 if size is None else size
        start = 0
        while True:
            newline = buf.find(b"\n", start)
            if newline >= 0:
                end = newline + 1
                break
            if 0 <= limit <= len(buf):
                end = limit
                break
            start = len(buf)
            more = self._more()
            if more is None:
                end = len(buf)
                break
            buf += more
        if 0 <= limit < end:
            end = limit
        data = bytes(buf[:end])
        del buf[:end]
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Input:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def drain(self, budget: int) -> bool:
        """Discard up to ``budget`` unread body bytes; True if the body ended."""
        self._continue = None  # never invite a body we are about to discard
        self._buf.clear()
        body = self._body
        while not body.done:
            if budget <= 0 or self.error is not None:
                return False
            data = self._recv(READ_SIZE)
            if not data:
                return False
            budget -= len(data)
            body.feed(data)
        return True

    def leftover(self) -> bytes:
        """Bytes received after the body: the start of the next request."""
        return self._body.leftover


class EmptyInput:
    """``wsgi.input`` of a request without a body: always at its end.

    Most requests have no body; one shared, stateless instance spares each
    of them the reader, the framing and the buffer objects of ``Input``.
    """

    __slots__ = ()
    error: HTTPError | None = None

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> EmptyInput:
        return self

    def __next__(self) -> bytes:
        raise StopIteration



EMPTY_INPUT = EmptyInput()


class ErrorStream:
    """``wsgi.errors``: each newline-terminated write becomes one error-log record."""

    def __init__(self, write_line: Callable[[str], None]) -> None:
        self._write_line = write_line
        self._partial = ""

    def write(self, text: str) -> int:
        data = self._partial + text
        if data.endswith("\n"):
            self._partial = ""
            self._write_line(data[:-1])  # a multi-line message stays one record
        else:
            self._partial = data
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            self._write_line(self._partial)
            self._partial = ""


def base_environ(
    server_name: str,
    server_port: str,
    multiprocess: bool,
    errors: Any,
    url_scheme: str = "http",
    multithread: bool = False,
) -> dict[str, Any]:
    """The keys that are the same for every request on one listener.

    ``server_port`` is the listener's port: SERVER_PORT is the port on which
    a request was received (RFC 3875 §4.1.15), whatever Host says. For a
    unix socket, which has no port, it is "" and each request gets one of
    its own (see ``build_environ``).
    """
    return {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.errors": errors,
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.input_terminated": True,
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SCRIPT_NAME": os.environ.get("SCRIPT_NAME", ""),
    }


# field name as received -> environ key; bounded, filled as names are seen.
_header_keys: dict[str, str] = {}


def _environ_key(name: str) -> str:
    key = "HTTP_" + name.upper().replace("-", "_")
    if key == "HTTP_CONTENT_TYPE" or key == "HTTP_CONTENT_LENGTH":
        key = key[5:]  # PEP 3333: these two have no HTTP_ prefix
    if len(_header_keys) < 1024:
        _header_keys[name] = key
    return key


def _path_info(path: str) -> str:
    if "%" in path:
        return unquote_to_bytes(path).decode("latin-1")
    return path


def build_environ(
    base: dict[str, Any],
    req: Request,
    remote: tuple[str, str],
    wsgi_input: Input | EmptyInput,
) -> dict[str, Any]:
    environ = base.copy()
    environ["REQUEST_METHOD"] = req.method
    environ["SERVER_PROTOCOL"] = req.version
    environ["QUERY_STRING"] = req.query
    environ["RAW_URI"] = req.target
    environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = remote
    environ["wsgi.input"] = wsgi_input
    path = _path_info(req.path)
    script_name = base["SCRIPT_NAME"]
    if script_name and path.startswith(script_name):
        path = path[len(script_name):]
    environ["PATH_INFO"] = path
    keys = _header_keys
    for name, value in req.headers:
        key = keys.get(name) or _environ_key(name)
        if key in environ:
            sep = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = environ[key] + sep + value
        else:
            environ[key] = value
    host = req.host
    port = ""
    if host:
        if req.target[0] != "/":
            environ["HTTP_HOST"] = host  # absolute-form: the target's authority wins
        name, port = _split_host(host)
        environ["SERVER_NAME"] = name
    if not base["SERVER_PORT"]:
        # A unix socket has no port, and PEP 3333 requires one: the port the
        # client asked for in Host, else the default of the listener's scheme.
        environ["SERVER_PORT"] = port or ("443" if base["wsgi.url_scheme"] == "https" else "80")
    return environ


_host_cache: dict[str, tuple[str, str]] = {}


def _split_host(host: str) -> tuple[str, str]:
    """(name, port) of a Host value; the port is "" when Host has none."""
    cached = _host_cache.get(host)
    if cached is not None:
        return cached
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[: end + 1], host[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    if len(_host_cache) < 256:
        _host_cache[host] = (name, port)
    return name, port


def set_client(environ: dict[str, Any], client: Client, host: str | None = None) -> None:
    """REMOTE_ADDR, REMOTE_PORT and wsgi.url_scheme as a trusted proxy tells them.

    SERVER_PORT is left alone: it is the port the request was received on,
    and a proxy's scheme header says how the client reached the proxy, not
    on which port (a TLS proxy on 8443 sends ``X-Forwarded-Proto: https``
    too). ``host`` is not used; it stays for the callers' sake.
    """
    environ["REMOTE_ADDR"] = client.addr
    environ["REMOTE_PORT"] = client.port
    environ["wsgi.url_scheme"] = client.scheme


class Response:
    """What the application answers, sent over one connection.

    PEP 3333 only: ``start_response``, ``write``, the body pieces and the file
    wrapper. Every decision about framing and persistence is the connection
    core's (``http/connection.py``); ``keep_check``, called once when the
    head is written, lets the worker still say no to keeping the connection.
    """

    __slots__ = (
        "req", "conn", "sendall", "sendfile", "sendmsg", "status", "headers", "code",
        "keep_check", "_server_lines", "input", "error", "request_id",
    )

    def __init__(
        self,
        req: Request,
        conn: Connection,
        sendall: SendAll,
        sendfile: SendFile | None,
        server_lines: str,
        keep_check: Callable[[], bool] | None = None,
        sendmsg: SendMsg | None = None,
    ) -> None:
        self.req = req
        self.conn = conn
        self.sendall = sendall
        self.sendmsg = sendmsg
        self.sendfile = sendfile
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.code = 0
        self.keep_check = keep_check
        self._server_lines = server_lines
        self.input: Input | EmptyInput | None = None
        self.error: InvalidResponse | None = None  # from start_response
        self.request_id: tuple[str, str] | None = None  # (header, id) to send, set by the worker

    @property
    def head_sent(self) -> bool:
        return self.conn.head_sent

    @property
    def sent(self) -> int:
        """Body bytes sent."""
        return self.conn.sent

    @property
    def keep_alive(self) -> bool:
        return self.conn.keep_alive

    @property
    def problem(self) -> str:
        """Why the body broke its framing, if it did (the connection then closes)."""
        return self.conn.problem

    @property
    def must_close(self) -> bool:
        return self.conn.must_close

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.conn.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # avoid a reference cycle (PEP 3333)
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        try:
            self.code = http_response.status_code(status)
            if type(headers) is not list:
                raise InvalidResponse("response headers must be a list")
        except InvalidResponse as exc:
            self.error = exc  # decides the response even if the app swallows it
            raise
        self.error = None
        self.status = status
        self.headers = headers
        return self.write

    def _head(self, body_length: int | None) -> bytes:
        """Serialise the head; ``body_length`` is known when the body is one piece."""
        inp = self.input
        if inp is not None and inp.error is not None:
            raise inp.error
        if self.error is not None:
            raise self.error
        if self.status is None:
            raise InvalidResponse("the application returned without calling start_response")
        if self.request_id is not None:
            self.headers = with_header(self.headers, self.request_id)
        return self.conn.response_head(self.status, self.code, self.headers, body_length,
                                       self._server_lines, self.keep_check)

    def write(self, data: bytes) -> None:
        """The ``write`` callable, and the path for every body piece after the first."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"response body must be bytes, not {type(data).__name__}")
            data = bytes(data)
        if not self.conn.head_sent:
            if not data:
                return
            head = self._head(None)
            self._send_with_head(head, self.conn.frame(data))
            return
        framed = self.conn.frame(data)
        if framed:
            self.sendall(framed)

    def send_single(self, data: bytes) -> None:
        """The whole body in one piece: head and body in one write."""
        if type(data) is not bytes:
            self.write(data)
            return
        head = self._head(len(data))
        self._send_with_head(head, self.conn.frame(data) if data else b"")

    def _send_with_head(self, head: bytes, data: bytes) -> None:
        """Send the head and the first body bytes as one write."""
        sendmsg = self.sendmsg
        if sendmsg is None or len(data) < JOIN_LIMIT:
            self.sendall(head + data if data else head)
            return
        sent = sendmsg((head, data))
        if sent < len(head):  # a partial write (a signal, a send timeout)
            self.sendall(head[sent:])
            sent = len(head)
        if sent - len(head) < len(data):
            with memoryview(data) as view:
                self.sendall(view[sent - len(head):])  # type: ignore[arg-type]

    def send_file(self, wrapper: FileWrapper) -> None:
        """Send a file with ``os.sendfile`` when it is a regular file, else by blocks."""
        conn = self.conn
        fd = wrapper.fileno() if self.sendfile is not None and not conn.head_sent else None
        span = _file_span(fd) if fd is not None else None
        if fd is None or span is None or self.sendfile is None:
            for block in wrapper:
                self.write(block)
            return
        offset, count = span
        head = self._head(count)
        if not conn.body_allowed:
            self.sendall(head)
            return
        length = conn.content_length
        if length is not None:
            count = min(count, length)
        sent = self.sendfile(head, fd, offset, count)
        conn.count_sent(sent)
        os.lseek(fd, offset + sent, os.SEEK_SET)
        if sent < count:  # the file shrank, or sendfile cannot do this pair
            for block in wrapper:
                framed = conn.frame(block)
                if framed:
                    self.sendall(framed)

    def finish(self) -> None:
        """End the body: send a head if none was sent, close the chunked framing."""
        if not self.conn.head_sent:
            self.sendall(self._head(0))
            return
        end = self.conn.end_of_body()
        if end:
            self.sendall(end)


def with_header(headers: list[tuple[str, str]], field: tuple[str, str]) -> list[tuple[str, str]]:
    """``headers`` and ``field``, unless the application set that field itself
    (a new list: the application's own is left as it gave it)."""
    name = field[0].lower()
    for key, _ in headers:
        if key.lower() == name:
            return headers
    return [*headers, field]


def _file_span(fd: int) -> tuple[int, int] | None:
    """(current offset, bytes left) of a regular file, or None."""
    try:
        offset = os.lseek(fd, 0, os.SEEK_CUR)
        size = os.fstat(fd).st_size
    except OSError:
        return None
    return offset, max(0, size - offset)


def run_app(app: WSGIApp, environ: dict[str, Any], resp: Response) -> None:
    """Call the application and send everything it returns; always ``close()``."""
    result = app(environ, resp.start_response)
    try:
        kind = type(result)
        if (kind is list or kind is tuple) and not resp.head_sent:
            _send_sequence(resp, result)  # type: ignore[arg-type]
        elif isinstance(result, FileWrapper):
            resp.send_file(result)
        else:
            for data in result:
                resp.write(data)
        resp.finish()
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def _send_sequence(resp: Response, result: list[bytes] | tuple[bytes, ...]) -> None:
    """A list body is known in full: one ``sendall`` with a Content-Length."""
    if len(result) == 1:
        resp.send_single(result[0])
        return
    try:
        data = b"".join(result)
    except TypeError:
        for piece in result:
            resp.write(piece)  # raises the precise error for the piece that is wrong
        return
    resp.send_single(data)
