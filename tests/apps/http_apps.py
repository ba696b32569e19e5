"""WSGI apps for the HTTP tests: bodies, framing, files, broken responses."""

import io
import json
import os
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator


def _query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def pid(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def echo(environ, start_response):
    """The body back, read with read()."""
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def echo_by(environ, start_response):
    """The body back, read with ?how=read_n|readline|readlines|iter|read_none."""
    stream = environ["wsgi.input"]
    how = _query(environ).get("how", "read_n")
    if how == "read_n":
        parts = []
        while chunk := stream.read(7):
            parts.append(chunk)
        body = b"".join(parts)
    elif how == "readline":
        parts = []
        while line := stream.readline():
            parts.append(line)
        body = b"|".join(parts)
    elif how == "readline_limit":
        parts = []
        while line := stream.readline(4):
            parts.append(line)
        body = b"|".join(parts)
    elif how == "readlines":
        body = b"|".join(stream.readlines())
    elif how == "iter":
        body = b"|".join(stream)
    else:
        body = stream.read(int(environ.get("CONTENT_LENGTH") or 0) or 1 << 30)
    assert stream.read(5) == b"" and stream.readline() == b""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def sleep_briefly(environ, start_response):
    time.sleep(float(_query(environ).get("s", "0.5")))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept"]


def no_read(environ, start_response):
    """Answer without reading the body."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"did not read"]


def read_some(environ, start_response):
    """Read only ?n bytes of the body."""
    n = int(_query(environ).get("n", "1"))
    data = environ["wsgi.input"].read(n)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"read %d" % len(data)]


def swallow(environ, start_response):
    """Read the body, and pretend nothing went wrong if reading fails."""
    try:
        environ["wsgi.input"].read()
    except Exception:
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"everything is fine"]


def length(environ, start_response):
    """How many body bytes arrived."""
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(len(body)).encode()]


def stream(environ, start_response):
    """?n pieces, no Content-Length: chunked on HTTP/1.1 keep-alive."""
    n = int(_query(environ).get("n", "3"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (b"piece %d;" % i for i in range(n))


def status(environ, start_response):
    """Status ?code with a body (which the server must drop where it has none),
    and ?cl to set Content-Length."""
    q = _query(environ)
    code = q.get("code", "200")
    headers = [] if code in ("204", "304") else [("Content-Type", "text/plain")]
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    start_response(f"{code} Whatever", headers)
    return [b"some body"]


def status_generator(environ, start_response):
    q = _query(environ)
    start_response(f"{q.get('code', '200')} Whatever", [("Content-Type", "text/plain")])
    return iter([b"some ", b"body"])


def too_long(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    return iter([b"12345", b"67890"])


def too_short(environ, start_response):
    start_response("200 OK", [("Content-Length", "10")])
    return iter([b"12345"])


def bad_header(environ, start_response):
    start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: pwned=1")])
    return [b"x"]


def bad_status(environ, start_response):
    start_response("200 OK\r\nX-Evil: 1", [])
    return [b"x"]


def hop_by_hop(environ, start_response):
    start_response("200 OK", [
        ("Content-Type", "text/plain"), ("Connection", "keep-alive, Upgrade"),
        ("Keep-Alive", "timeout=99"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
        ("X-Kept", "yes"),
    ])
    return iter([b"hop", b"!"])


def app_close(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close")])
    return [b"bye"]


def write_and_list(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one ")
    return [b"two ", b"three"]


def file(environ, start_response):
    """wsgi.file_wrapper over ?path, from ?offset, with ?cl as Content-Length."""
    q = _query(environ)
    f = open(q["path"], "rb")
    if "offset" in q:
        f.seek(int(q["offset"]))
    headers = [("Content-Type", "application/octet-stream")]
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](f, 8192)


def file_bytesio(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](io.BytesIO(b"in memory " * 1000), 4096)


def environ_json(environ, start_response):
    body = json.dumps({k: v for k, v in environ.items() if isinstance(v, str)}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def _validated(app):
    return validator(app)


# PEP 3333 conformance: the same apps wrapped in wsgiref's validator, which
# asserts on anything the server hands them that breaks the spec.
v_hello = _validated(hello)
v_echo_by = _validated(echo_by)
v_stream = _validated(stream)
v_status = _validated(status)
v_file = _validated(file)
v_write = _validated(write_and_list)
v_environ = _validated(environ_json)


def _routes():
    return {name: app for name, app in globals().items()
            if callable(app) and not name.startswith("_") and name not in ("validator", "parse_qs")}


def router(environ, start_response):
    """One server for many tests: /NAME runs the app NAME above."""
    name = environ["PATH_INFO"].strip("/").split("/")[0] or "hello"
    app = _ROUTES.get(name)
    if app is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no such app"]
    return app(environ, start_response)


_ROUTES = _routes()
