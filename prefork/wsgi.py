# The WSGI bridge (PEP 3333) between parsed requests and the application.
# Strategy: the environ is a copy of a base dict prepared once per worker and
# listener, filled with the few per-request keys; ``wsgi.input`` follows the
# body's framing and reads through a ``recv`` callable the worker supplies;
# ``Response`` decides the framing of what the application returns and sends
# the head and a one-chunk body in a single ``sendall``. No socket is created
# or configured here: the worker hands in the callables that do I/O.
from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import unquote_to_bytes

from . import SERVER_SOFTWARE
from .http import response as http_response
from .http.body import ChunkedBody, LengthBody
from .http.errors import HTTPError
from .http.request import Request

ExcInfo = tuple[type[BaseException], BaseException, TracebackType]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Recv = Callable[[int], bytes]
SendAll = Callable[[bytes], Any]

READ_SIZE = 65536


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
        """The file descriptor, if the wrapped object is a real file."""
        try:
            fd = self.filelike.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            return None
        return fd if isinstance(fd, int) and fd >= 0 else None


class Input:
    """``wsgi.input``: the request body, bounded by its framing."""

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
        self._buf = bytearray(body.feed(initial) if initial else b"")
        self._continue = send_continue
        # A protocol error met while reading the body: it decides the response
        # status whatever the application made of the exception.
        self.error: HTTPError | None = None

    @property
    def body(self) -> LengthBody | ChunkedBody:
        return self._body

    def _fill(self) -> bool:
        """Read more payload into the buffer; False once the body is complete."""
        body = self._body
        if body.done:
            return False
        if self._continue is not None:
            send, self._continue = self._continue, None
            send()
        try:
            data = self._recv(READ_SIZE)
            if not data:
                body.eof()
            self._buf += body.feed(data)
        except HTTPError as exc:
            self.error = exc
            raise
        return True

    def read(self, size: int | None = -1) -> bytes:
        buf = self._buf
        if size is None or size < 0:
            while self._fill():
                pass
            data = bytes(buf)
            buf.clear()
            return data
        while len(buf) < size and self._fill():
            pass
        data = bytes(buf[:size])
        del buf[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        buf = self._buf
        limit = -1 if size is None else size
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if 0 <= limit <= len(buf):
                end = limit
                break
            start = len(buf)
            if not self._fill():
                end = len(buf)
                break
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
        while not self._body.done:
            if budget <= 0:
                return False
            data = self._recv(READ_SIZE)
            if not data:
                return False
            budget -= len(self._body.feed(data))
        return True

    def leftover(self) -> bytes:
        """Bytes received after the body: the start of the next request."""
        return self._body.leftover


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
) -> dict[str, Any]:
    """The keys that are the same for every request on one listener."""
    return {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.multithread": False,
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


_header_keys: dict[str, str] = {}


def _environ_key(name: str) -> str:
    key = _header_keys.get(name)
    if key is None:
        key = "HTTP_" + name.upper().replace("-", "_")
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
    wsgi_input: Input,
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
    for name, value in req.headers:
        key = _environ_key(name)
        if key == "HTTP_CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key == "HTTP_CONTENT_LENGTH":
            environ["CONTENT_LENGTH"] = value
        elif key in environ:
            sep = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = environ[key] + sep + value
        else:
            environ[key] = value
    host = req.host
    if host:
        name, port = _split_host(host, base["wsgi.url_scheme"])
        environ["SERVER_NAME"] = name
        environ["SERVER_PORT"] = port
    return environ


_host_cache: dict[str, tuple[str, str]] = {}


def _split_host(host: str, scheme: str) -> tuple[str, str]:
    cached = _host_cache.get(host)
    if cached is not None:
        return cached
    if host.startswith("["):
        end = host.find("]")
        name, rest = host[: end + 1], host[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    result = (name, port or ("443" if scheme == "https" else "80"))
    if len(_host_cache) < 256:
        _host_cache[host] = result
    return result


class Response:
    """What the application answers, framed and sent over one connection."""

    __slots__ = (
        "req", "sendall", "sendfile", "status", "headers", "code", "head_sent",
        "sent", "keep_alive", "_chunked", "_length", "_body_ok", "_server_lines",
        "must_close", "input",
    )

    def __init__(
        self,
        req: Request,
        sendall: SendAll,
        sendfile: Callable[[int, int, int], int] | None,
        keep_alive: bool,
        server_lines: str,
    ) -> None:
        self.req = req
        self.sendall = sendall
        self.sendfile = sendfile
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.code = 0
        self.head_sent = False
        self.sent = 0  # body bytes sent
        self.keep_alive = keep_alive
        self._chunked = False
        self._length: int | None = None
        self._body_ok = True
        self._server_lines = server_lines
        # Set when the body could not be framed as promised: the connection
        # must be closed after this response.
        self.must_close = False
        self.input: Input | None = None

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # avoid a reference cycle (PEP 3333)
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        self.code = http_response.status_code(status)
        if type(headers) is not list:
            raise http_response.InvalidResponse("response headers must be a list")
        self.status = status
        self.headers = headers
        return self.write

    def _head(self, body_length: int | None) -> bytes:
        """Serialise the head; ``body_length`` is known when the body is one chunk."""
        if self.input is not None and self.input.error is not None:
            raise self.input.error
        if self.status is None:
            raise AssertionError("the application did not call start_response")
        code = self.code
        fields = http_response.check_fields(self.headers)
        if fields.close:
            self.keep_alive = False
        method = self.req.method
        self._body_ok = body_ok = http_response.body_allowed(code, method)
        lines = fields.lines
        length = fields.content_length
        if not http_response.length_allowed(code):
            length = None
        elif length is None and body_length is not None and (body_ok or method == "HEAD"):
            length = body_length
            lines += f"Content-Length: {length}\r\n"
        elif length is not None:
            lines += f"Content-Length: {length}\r\n"
        if body_ok:
            self._length = length
            if length is None:
                if self.keep_alive and self.req.version == "HTTP/1.1":
                    self._chunked = True
                    lines += "Transfer-Encoding: chunked\r\n"
                else:
                    self.keep_alive = False
        if code < 200:
            self.keep_alive = False  # interim responses from the app are not supported
        if self.keep_alive:
            connection = "Connection: keep-alive\r\n" if self.req.version == "HTTP/1.0" else ""
        else:
            connection = "Connection: close\r\n"
        self.head_sent = True
        return (
            f"HTTP/1.1 {self.status}\r\n{lines}{self._server_lines}"
            f"Date: {http_response.http_date()}\r\n{connection}\r\n"
        ).encode("latin-1")

    def _frame(self, data: bytes) -> bytes:
        """The bytes to send for ``data``, counting it into ``sent``."""
        if not self._body_ok:
            return b""
        if self._chunked:
            self.sent += len(data)
            return http_response.chunk(data) if data else b""
        length = self._length
        if length is not None and self.sent + len(data) > length:
            data = data[: length - self.sent]
            self.must_close = True  # never send more than was promised
        self.sent += len(data)
        return data

    def write(self, data: bytes) -> None:
        """The ``write`` callable, and the path for every body chunk after the first."""
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"response body must be bytes, not {type(data).__name__}")
            data = bytes(data)
        if not self.head_sent:
            if not data:
                return
            head = self._head(None)
            self.sendall(head + self._frame(data))
            return
        framed = self._frame(data)
        if framed:
            self.sendall(framed)

    def send_single(self, data: bytes) -> None:
        """The whole body in one piece: head and body in one ``sendall``."""
        if type(data) is not bytes:
            self.write(data)
            return
        head = self._head(len(data))
        self.sendall(head + self._frame(data))

    def send_file(self, wrapper: FileWrapper) -> None:
        """Send a file with ``os.sendfile`` when it has a descriptor, else by blocks."""
        fd = wrapper.fileno() if self.sendfile is not None else None
        span = _file_span(fd) if fd is not None and not self.head_sent else None
        if span is None or self.sendfile is None:
            for block in wrapper:
                self.write(block)
            return
        offset, count = span
        self.sendall(self._head(count))
        if not self._body_ok or self._chunked:
            return
        if self._length is not None:
            count = min(count, self._length - self.sent)
        sent = self.sendfile(fd, offset, count) if count > 0 else 0  # type: ignore[arg-type]
        self.sent += sent
        os.lseek(fd, offset + sent, os.SEEK_SET)  # type: ignore[arg-type]

    def finish(self) -> None:
        """End the body: send a head if none was sent, close the chunked framing."""
        if not self.head_sent:
            self.sendall(self._head(0))
        elif self._chunked:
            self.sendall(http_response.LAST_CHUNK)
        elif self._body_ok and self._length is not None and self.sent < self._length:
            self.must_close = True  # the body is shorter than its Content-Length


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
        if type(result) is list and len(result) == 1 and not resp.head_sent:
            resp.send_single(result[0])
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
