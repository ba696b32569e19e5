"""The WSGI bridge without a server: ``wsgi.input`` over a real socket pair,
and ``Response`` framing checked on the exact bytes it hands to ``sendall``."""

import io
import os
import socket
import sys

import pytest

from prefork.http.body import ChunkedBody, LengthBody
from prefork.http.connection import Connection
from prefork.http.errors import PayloadTooLarge
from prefork.http.request import Limits, parse_head
from prefork.http.response import InvalidResponse
from prefork.wsgi import FileWrapper, Input, Response, run_app


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def make_input(pair, data, length=None, initial=b"", chunked=False, send_continue=None, limits=None):
    server, client = pair
    client.sendall(data)
    client.shutdown(socket.SHUT_WR)
    body = ChunkedBody(limits or Limits()) if chunked else LengthBody(len(initial) + len(data)
                                                                      if length is None else length)
    return Input(server.recv, body, initial, send_continue)


# --- wsgi.input


def test_read_all_and_then_nothing(pair):
    inp = make_input(pair, b"hello world")
    assert inp.read() == b"hello world"
    assert inp.read() == b"" and inp.read(3) == b"" and inp.readline() == b""


def test_read_sizes(pair):
    inp = make_input(pair, b"0123456789", initial=b"ab", length=12)
    assert inp.read(1) == b"a"
    assert inp.read(5) == b"b0123"
    assert inp.read(0) == b""
    assert inp.read(None) == b"456789"


def test_body_is_bounded_by_its_length(pair):
    inp = make_input(pair, b"abcdeNEXT REQUEST", length=5)
    assert inp.read(100) == b"abcde"
    assert inp.read() == b""
    assert inp.leftover() == b"NEXT REQUEST"


def test_readline_variants(pair):
    inp = make_input(pair, b"one\ntwo\nthree")
    assert inp.readline() == b"one\n"
    assert inp.readline(2) == b"tw"
    assert inp.readline(-1) == b"o\n"
    assert inp.readline(None) == b"three"
    assert inp.readline() == b""


def test_readlines_and_iteration(pair):
    inp = make_input(pair, b"a\nb\nc\n")
    assert inp.readlines() == [b"a\n", b"b\n", b"c\n"]
    inp = make_input(socket.socketpair(), b"a\nbb\nccc\n")
    assert inp.readlines(3) == [b"a\n", b"bb\n"]
    assert list(inp) == [b"ccc\n"]


def test_chunked_input_with_leftover(pair):
    inp = make_input(pair, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET /next", chunked=True)
    assert inp.read() == b"abcde"
    assert inp.leftover() == b"GET /next"


def test_truncated_body_is_an_error_kept_on_the_input(pair):
    inp = make_input(pair, b"abc", length=10)
    with pytest.raises(Exception) as info:
        inp.read()
    assert info.value.status == 400
    assert inp.error is info.value
    with pytest.raises(type(info.value)):
        inp.read(1)  # the error sticks


def test_chunked_over_limit_is_413(pair):
    inp = make_input(pair, b"5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n", chunked=True, limits=Limits(body=8))
    with pytest.raises(PayloadTooLarge):
        inp.read()
    assert inp.error.status == 413


def test_continue_sent_once_on_first_network_read(pair):
    sent = []
    inp = make_input(pair, b"abcdef", send_continue=lambda: sent.append(1))
    assert sent == []
    assert inp.read(2) == b"ab"
    assert inp.read() == b"cdef"
    assert sent == [1]


def continue_decider(raw):
    """send_continue as a worker builds it: the connection core decides."""
    conn = Connection(Limits(), parse_head)
    req = conn.receive(raw)
    conn.start(req, True)
    sent = []
    return conn, sent, lambda: conn.continue_now() and sent.append(1)


def test_continue_not_sent_when_body_began(pair):
    conn, sent, send_continue = continue_decider(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 6\r\n\r\nabc")
    server, _ = pair
    inp = make_input(pair, b"def", initial=conn.take_buffer(), send_continue=send_continue, length=6)
    assert inp.read() == b"abcdef"
    assert sent == []


def test_continue_not_sent_when_not_asked(pair):
    conn, sent, send_continue = continue_decider(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
    inp = make_input(pair, b"abc", send_continue=send_continue, length=3)
    assert inp.read() == b"abc"
    assert sent == []


def test_drain(pair):
    inp = make_input(pair, b"x" * 1000 + b"NEXT", length=1000)
    assert inp.drain(2000)
    assert inp.leftover() == b"NEXT"


# --- Response framing


def request(raw=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
    return parse_head(raw, Limits())[0]


class Sink:
    def __init__(self):
        self.calls = []

    def __call__(self, data):
        self.calls.append(bytes(data))

    @property
    def data(self):
        return b"".join(self.calls)


def respond(app, raw=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", keep_alive=True, keep_check=None, sendfile=None):
    sink = Sink()
    conn = Connection(Limits(), parse_head)
    req = request(raw)
    conn.start(req, keep_alive)
    resp = Response(req, conn, sink, sendfile, "Server: test\r\n", keep_check)
    run_app(app, {}, resp)
    return resp, sink


def app_returning(body, status="200 OK", headers=(("Content-Type", "text/plain"),)):
    def app(environ, start_response):
        start_response(status, list(headers))
        return body

    return app


def split(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], dict(line.split(": ", 1) for line in lines[1:]), body


def test_single_chunk_body_is_one_sendall_with_length():
    resp, sink = respond(app_returning([b"hello"]))
    assert len(sink.calls) == 1
    status, headers, body = split(sink.data)
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Length"] == "5" and body == b"hello"
    assert "Connection" not in headers and "Date" in headers and headers["Server"] == "test"
    assert resp.keep_alive


def test_list_of_pieces_is_joined_into_one_sendall():
    _, sink = respond(app_returning([b"a", b"bc", b"def"]))
    assert len(sink.calls) == 1
    assert split(sink.data)[1]["Content-Length"] == "6"


def test_generator_is_chunked_on_http11_keep_alive():
    resp, sink = respond(app_returning(iter([b"ab", b"", b"cde"])))
    _, headers, body = split(sink.data)
    assert headers["Transfer-Encoding"] == "chunked"
    assert body == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
    assert resp.keep_alive


def test_generator_is_close_delimited_without_keep_alive():
    resp, sink = respond(app_returning(iter([b"ab", b"cde"])), keep_alive=False)
    _, headers, body = split(sink.data)
    assert "Transfer-Encoding" not in headers and headers["Connection"] == "close"
    assert body == b"abcde" and not resp.keep_alive


def test_generator_on_http10_keep_alive_is_close_delimited():
    resp, sink = respond(app_returning(iter([b"ab"])),
                         raw=b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    _, headers, body = split(sink.data)
    assert headers["Connection"] == "close" and body == b"ab"


def test_http10_keep_alive_with_length_says_keep_alive():
    resp, sink = respond(app_returning([b"ab"]), raw=b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert split(sink.data)[1]["Connection"] == "keep-alive" and resp.keep_alive


def test_keep_check_false_means_close():
    calls = []

    def check():
        calls.append(1)
        return False

    resp, sink = respond(app_returning([b"x"]), keep_check=check)
    assert split(sink.data)[1]["Connection"] == "close"
    assert calls == [1] and not resp.keep_alive


@pytest.mark.parametrize("raw, status, app_length, expect_length", [
    (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK", None, "9"),
    (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK", "20", "20"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "204 No Content", "9", None),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "204 No Content", None, None),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "304 Not Modified", "20", "20"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "304 Not Modified", None, None),
])
def test_bodiless_responses(raw, status, app_length, expect_length):
    headers = [("Content-Length", app_length)] if app_length else []
    _, sink = respond(app_returning([b"some body"], status, headers), raw=raw)
    _, fields, body = split(sink.data)
    assert body == b""
    assert fields.get("Content-Length") == expect_length
    assert "Transfer-Encoding" not in fields


def test_interim_status_from_the_app_is_refused():
    with pytest.raises(InvalidResponse, match="is not a final status"):
        respond(app_returning([b"x"], "103 Early Hints"))


def test_header_values_may_be_str_subclasses():
    class Markup(str):
        pass

    _, sink = respond(app_returning([b"x"], "200 OK", [(Markup("X-Safe"), Markup("yes"))]))
    assert split(sink.data)[1]["X-Safe"] == "yes"


def test_head_of_generator_sends_no_body_and_no_framing():
    resp, sink = respond(app_returning(iter([b"abc", b"def"])), raw=b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    _, fields, body = split(sink.data)
    assert body == b"" and "Transfer-Encoding" not in fields and "Content-Length" not in fields
    assert resp.keep_alive


def test_too_long_body_is_truncated_and_closes():
    resp, sink = respond(app_returning(iter([b"1234", b"5678"]), headers=[("Content-Length", "5")]))
    assert split(sink.data)[2] == b"12345"
    assert resp.must_close and not resp.keep_alive and "more than" in resp.problem


def test_too_short_body_closes():
    resp, sink = respond(app_returning(iter([b"123"]), headers=[("Content-Length", "5")]))
    assert split(sink.data)[2] == b"123"
    assert resp.must_close and "3 bytes of its Content-Length 5" in resp.problem


def test_hop_by_hop_fields_are_dropped_and_close_honoured():
    resp, sink = respond(app_returning([b"x"], headers=[
        ("Connection", "close"), ("Keep-Alive", "timeout=5"), ("Upgrade", "h2c"),
        ("Transfer-Encoding", "chunked"), ("Proxy-Authenticate", "Basic"), ("X-Ok", "1"),
    ]))
    _, fields, body = split(sink.data)
    assert fields == {"Server": "test", "Date": fields["Date"], "X-Ok": "1", "Content-Length": "1",
                      "Connection": "close"}
    assert not resp.keep_alive


@pytest.mark.parametrize("headers, name", [
    ([("X-A", "a\r\nSet-Cookie: x=1")], "X-A"),
    ([("X-A", "fine"), ("X-B", "a\nb")], "X-B"),
    ([("X-C", "a\rb")], "X-C"),
    ([("X-D", "a\x00b")], "X-D"),
    ([("X-E\r\nEvil", "v")], "X-E"),
    ([("X E", "v")], "X E"),
    ([("X-F", "\u20ac")], "X-F"),
    ([("Content-Length", "abc")], "Content-Length"),
    ([("Content-Length", "1"), ("Content-Length", "1")], "Content-Length"),
])
def test_unsafe_response_fields_are_refused(headers, name):
    with pytest.raises(InvalidResponse) as info:
        respond(app_returning([b"x"], headers=headers))
    assert name.split("\r")[0] in info.value.detail


@pytest.mark.parametrize("status", ["200 OK\r\nX: y", "20 OK", "2000 OK", "OK", "200 O\x00K"])
def test_unsafe_status_is_refused(status):
    with pytest.raises(InvalidResponse):
        respond(app_returning([b"x"], status=status))


def test_bad_status_is_refused_even_if_app_swallows_the_error():
    def app(environ, start_response):
        try:
            start_response("200 OK\r\nX: y", [])
        except Exception:
            pass
        return [b"x"]

    with pytest.raises(InvalidResponse):
        respond(app)


def test_start_response_rules():
    def twice(environ, start_response):
        start_response("200 OK", [])
        start_response("500 Oops", [])
        return [b""]

    with pytest.raises(AssertionError):
        respond(twice)

    def replaced(environ, start_response):
        start_response("200 OK", [])
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"oops"]

    _, sink = respond(replaced)
    assert sink.data.startswith(b"HTTP/1.1 500 Oops\r\n")

    def after_head(environ, start_response):
        write = start_response("200 OK", [])
        write(b"partial")
        try:
            raise ValueError("too late")
        except ValueError:
            start_response("500 Oops", [], sys.exc_info())
        return []

    with pytest.raises(ValueError, match="too late"):
        respond(after_head)


def test_input_error_decides_the_status():
    sink = Sink()
    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"zz\r\n")
        inp = Input(a.recv, ChunkedBody(Limits()), b"", None)
        conn = Connection(Limits(), parse_head)
        conn.start(request(), True)
        resp = Response(request(), conn, sink, None, "", None)
        resp.input = inp

        def app(environ, start_response):
            try:
                inp.read()
            except Exception:
                pass
            start_response("200 OK", [])
            return [b"all good"]

        with pytest.raises(Exception) as info:
            run_app(app, {}, resp)
        assert info.value.status == 400 and sink.calls == []


def test_close_is_called_on_the_iterable():
    closed = []

    class Body:
        def __iter__(self):
            return iter([b"a"])

        def close(self):
            closed.append(True)

    respond(app_returning(Body()))
    assert closed == [True]


# --- wsgi.file_wrapper


def test_file_wrapper_uses_sendfile_from_the_current_offset(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 40)
    calls = []

    def sendfile(head, fd, offset, count):
        calls.append((offset, count))
        return count

    class Unclosable:  # so that the file is still open after the response
        def __init__(self, f):
            self.read, self.fileno = f.read, f.fileno

    with open(path, "rb") as f:
        f.seek(100)
        resp, sink = respond(lambda e, s: (s("200 OK", [("Content-Length", "50")]) and None)
                             or FileWrapper(Unclosable(f)), sendfile=sendfile)
        assert f.tell() == 150  # the file position follows what was sent
    assert calls == [(100, 50)]
    assert resp.sent == 50


def test_file_wrapper_falls_back_without_a_file_descriptor(tmp_path):
    calls = []

    def sendfile(head, fd, offset, count):
        calls.append(count)
        return count

    wrapper = FileWrapper(io.BytesIO(b"abc" * 10), 7)
    _, sink = respond(lambda e, s: (s("200 OK", []) and None) or wrapper, sendfile=sendfile)
    assert calls == []
    assert split(sink.data)[2].replace(b"\r\n", b"").endswith(b"0")  # chunked blocks
    r, w = os.pipe()
    with os.fdopen(r, "rb") as rf, os.fdopen(w, "wb") as wf:
        wf.write(b"piped")
        wf.close()
        _, sink = respond(lambda e, s: (s("200 OK", [("Content-Length", "5")]) and None)
                          or FileWrapper(rf), sendfile=sendfile)
    assert calls == [] and split(sink.data)[2] == b"piped"


def test_file_wrapper_partial_sendfile_finishes_by_reading(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    sink_holder = {}

    def sendfile(head, fd, offset, count):
        sink_holder["sink"](head + os.pread(fd, 4, offset))
        return 4  # as if sendfile gave up after 4 bytes

    sink = Sink()
    sink_holder["sink"] = sink
    with open(path, "rb") as f:
        conn = Connection(Limits(), parse_head)
        conn.start(request(), True)
        resp = Response(request(), conn, sink, sendfile, "", None)
        run_app(lambda e, s: (s("200 OK", []) and None) or FileWrapper(f), {}, resp)
    assert split(sink.data)[2] == b"0123456789"
    assert resp.sent == 10 and not resp.must_close
