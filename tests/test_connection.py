"""The sans-IO connection core (prefork/http/connection.py) with byte strings:
persistence, pipelining, 100-continue, framing both ways, draining and the
"next request or close" decision, at arbitrary splits of the input."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prefork.http.body import ChunkedBody
from prefork.http.connection import CLOSE, CONTINUE, DRAIN, LINGER, NEXT, Connection
from prefork.http.errors import BadRequest, HTTPError, IncompleteBody
from prefork.http.request import Limits, parse_head

SERVER = "Server: t\r\n"


def new(budget=256 * 1024):
    return Connection(Limits(), parse_head, budget)


def feed_split(conn, data, cuts):
    """Feed ``data`` in pieces cut at ``cuts``; the requests that came out."""
    requests = []
    points = sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]
    start = 0
    for end in points:
        piece = data[start:end]
        start = end
        if not piece:
            continue
        req = conn.receive(piece)
        while req is not None:
            requests.append(req)
            finish_bodiless(conn, req)
            req = conn.pending()
    return requests


def finish_bodiless(conn, req):
    assert conn.start(req, True) is None
    conn.response_head("200 OK", 200, [], 0, SERVER)
    assert conn.end_of_body() == b""
    assert conn.after_response() == NEXT


def head(status="200 OK", code=200, headers=(), length=None, **kw):
    return head_of(new_started(**kw), status, code, headers, length)


def new_started(raw=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", willing=True):
    conn = new()
    req = conn.receive(raw)
    conn.start(req, willing)
    return conn


def head_of(conn, status="200 OK", code=200, headers=(), length=None, may_keep=None):
    return conn.response_head(status, code, list(headers), length, SERVER, may_keep).decode()


PIPELINE = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"\r\n"  # a stray empty line between requests (RFC 9112 §2.2)
            b"GET /b?q=1 HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 300 + b"\r\n\r\n"
            b"HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(PIPELINE)), max_size=12))
def test_pipelined_requests_come_out_the_same_at_any_split(cuts):
    conn = new()
    requests = feed_split(conn, PIPELINE, cuts)
    assert [r.line for r in requests] == ["GET /a HTTP/1.1", "GET /b?q=1 HTTP/1.1", "HEAD /c HTTP/1.1"]
    assert conn.idle


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=60), st.lists(st.integers(0, 200), max_size=8))
def test_request_body_and_the_next_request_at_any_split(size, cuts):
    body = bytes(range(65, 65 + 26)) * 3
    body = body[:size]
    raw = (b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + body
           + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    conn = new()
    points = sorted({c % (len(raw) + 1) for c in cuts}) + [len(raw)]
    pieces = [raw[a:b] for a, b in zip([0] + points, points, strict=False) if raw[a:b]]
    req = None
    while req is None:
        req = conn.receive(pieces.pop(0))
    framing = conn.start(req, True)
    got = framing.feed(conn.take_buffer())
    while not framing.done:
        got += framing.feed(pieces.pop(0))
    assert got == body
    conn.response_head("204 No Content", 204, [], None, SERVER)
    assert conn.after_response() == NEXT
    nxt = conn.pending()
    while nxt is None:
        nxt = conn.receive(pieces.pop(0))
    assert nxt.line == "GET /next HTTP/1.1"


def test_a_bad_first_byte_is_refused_at_once():
    with pytest.raises(BadRequest):
        new().receive(b"\x16\x03\x01\x00\xa5")  # a TLS hello on a plain port


def test_head_is_parsed_again_only_when_a_line_ends():
    conn = new()
    assert conn.receive(b"GET / HT") is None
    assert conn.receive(b"TP/1.1\r\nHost: x") is None
    assert conn.receive(b"\r\n\r\n").line == "GET / HTTP/1.1"


def test_eof_between_requests_is_fine_inside_a_head_it_is_not():
    conn = new()
    conn.eof()
    conn.receive(b"\r\n")
    conn.eof()  # blank lines are not a request
    conn.receive(b"GET / HTTP/1.1\r\n")
    with pytest.raises(IncompleteBody):
        conn.eof()


# --- persistence (RFC 9112 §9.3)


@pytest.mark.parametrize("raw,willing,expect", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True, ""),
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", True, "Connection: close"),
    (b"GET / HTTP/1.0\r\n\r\n", True, "Connection: close"),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True, "Connection: keep-alive"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False, "Connection: close"),
])
def test_persistence(raw, willing, expect):
    conn = new_started(raw, willing)
    text = head_of(conn, length=2)
    if expect:
        assert expect in text
    else:
        assert "Connection:" not in text
    assert conn.keep_alive == (expect != "Connection: close")
    assert conn.after_response() == (NEXT if conn.keep_alive else CLOSE)


def test_the_worker_may_still_say_close_when_the_head_is_written():
    conn = new_started()
    asked = []
    text = head_of(conn, length=2, may_keep=lambda: asked.append(1) or False)
    assert "Connection: close" in text and asked == [1]


def test_application_close_is_honoured():
    conn = new_started()
    assert "Connection: close" in head_of(conn, headers=[("Connection", "close")], length=0)
    assert conn.after_response() == CLOSE


# --- response framing


def test_unknown_length_is_chunked_on_http11_and_ends_the_connection_on_http10():
    conn = new_started()
    text = head_of(conn)
    assert "Transfer-Encoding: chunked" in text
    wire = conn.frame(b"hello") + conn.frame(b"") + conn.frame(b" world") + conn.end_of_body()
    decoder = ChunkedBody(Limits())
    assert decoder.feed(wire) == b"hello world" and decoder.done
    conn = new_started(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert "Connection: close" in head_of(conn) and "chunked" not in head_of(new_started(
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
    assert conn.frame(b"raw") == b"raw"


def test_content_length_overrun_and_shortfall_close_the_connection():
    conn = new_started()
    head_of(conn, headers=[("Content-Length", "3")])
    assert conn.frame(b"abcdef") == b"abc"
    assert conn.must_close and not conn.keep_alive and "more than" in conn.problem
    conn = new_started()
    head_of(conn, headers=[("Content-Length", "3")])
    conn.frame(b"a")
    conn.end_of_body()
    assert conn.must_close and "1 bytes of its Content-Length 3" in conn.problem
    assert conn.after_response() == CLOSE


def test_head_and_304_carry_no_body():
    conn = new_started(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert "Content-Length: 5" in head_of(conn, length=5)
    assert conn.frame(b"hello") == b""
    conn = new_started()
    assert "Content-Length" not in head_of(conn, "304 Not Modified", 304, length=0)


def test_a_status_without_reason_phrase_still_gets_its_space():
    assert new_started().response_head("200", 200, [], 0, SERVER).startswith(b"HTTP/1.1 200 \r\n")


# --- 100-continue (RFC 9110 §10.1.1)

EXPECT = b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"


def test_continue_is_due_once_when_the_body_is_first_read():
    conn = new_started(EXPECT)
    assert not conn.body_reusable()  # the client may or may not send its body now
    assert conn.continue_now() and not conn.continue_now()
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_no_continue_once_the_body_began_or_the_response_was_sent():
    assert not new_started(EXPECT + b"ab").continue_now()
    conn = new_started(EXPECT)
    head_of(conn, length=0)
    assert not conn.continue_now()
    assert not new_started(EXPECT.replace(b"Expect: 100-continue\r\n", b"")).continue_now()


def test_a_response_before_the_awaited_body_closes_the_connection():
    conn = new_started(EXPECT)
    assert "Connection: close" in head_of(conn, length=0)
    assert conn.after_response() == LINGER


# --- draining an unread body, and the decision after the response


def test_unread_body_within_budget_is_drained_then_the_next_request_follows():
    conn = new_started(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    body = conn.body
    assert "Connection: close" not in head_of(conn, length=0)
    assert conn.after_response() == DRAIN
    body.feed(b"0123456789\r\nGET / HTTP/1.1\r\n")
    assert conn.body_drained(True) == NEXT
    assert conn.buffer == b"GET / HTTP/1.1\r\n"  # the stray CRLF was dropped


def test_unread_body_over_budget_closes_with_linger():
    conn = Connection(Limits(), parse_head, 5)
    req = conn.receive(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    conn.start(req, True)
    assert "Connection: close" in head_of(conn, length=0)
    assert conn.after_response() == LINGER


def test_a_drain_that_does_not_finish_lingers():
    conn = new_started(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    head_of(conn, length=0)
    assert conn.after_response() == DRAIN
    assert conn.body_drained(False) == LINGER and not conn.keep_alive


def test_closing_with_a_pipelined_request_unread_lingers():
    conn = new()
    req = conn.receive(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n")
    conn.start(req, True)
    head_of(conn, length=0)
    assert conn.after_response() == LINGER


def test_protocol_error_ends_the_exchange():
    conn = new_started()
    assert conn.error_status(HTTPError("x"))
    assert not conn.keep_alive
