"""HTTP/1.1 end to end: raw sockets against a real prefork server.

Persistent connections, pipelining, chunked uploads, 100-continue, framing of
HEAD/1xx/204/304 and of bodies that disagree with their Content-Length,
sendfile, slow clients, smuggling attempts and limits, under every worker
class; and the sync worker's keep-alive policy."""

import importlib.util
import os
import re
import signal
import socket
import threading
import time

import pytest
import requests
from conftest import APPS, WORKER_CLASSES
from rawhttp import Conn, chunked, get, post

from prefork.testing import serve


@pytest.fixture(scope="module", params=sorted(WORKER_CLASSES))
def server(request):
    with serve("http_apps:router", 1, cwd=APPS, loglevel="debug", **WORKER_CLASSES[request.param]) as s:
        yield s


def worker_pid(server):
    with Conn(server.port) as c:
        return int(c.request(get("/pid", extra="Connection: close\r\n")).body)


# --- persistent connections


def test_http11_connection_is_kept_for_several_requests(server):
    with Conn(server.port) as c:
        pids = set()
        for _ in range(5):
            resp = c.request(get("/pid"))
            assert resp.status == 200
            assert resp.header("Connection") is None  # HTTP/1.1: persistent by default
            pids.add(resp.body)
        assert len(pids) == 1


def test_http11_close_from_client_closes(server):
    with Conn(server.port) as c:
        resp = c.request(get("/hello", extra="Connection: close\r\n"))
        assert resp.header("Connection") == "close"
        assert resp.body == b"hello"
        assert c.closed_by_server()


def test_http10_closes_unless_keep_alive_asked(server):
    with Conn(server.port) as c:
        resp = c.request(b"GET /hello HTTP/1.0\r\n\r\n")
        assert resp.header("Connection") == "close"
        assert c.closed_by_server()
    with Conn(server.port) as c:
        for _ in range(3):
            resp = c.request(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert resp.header("Connection") == "keep-alive"
            assert resp.header("Content-Length") == "5"


def test_http10_stream_without_length_is_close_delimited(server):
    with Conn(server.port) as c:
        resp = c.request(b"GET /stream?n=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert resp.header("Transfer-Encoding") is None
        assert resp.header("Connection") == "close"
        assert resp.body == b"piece 0;piece 1;piece 2;"


def test_http11_stream_without_length_is_chunked_and_kept(server):
    with Conn(server.port) as c:
        resp = c.request(get("/stream?n=4"))
        assert resp.header("Transfer-Encoding") == "chunked"
        assert resp.body == b"piece 0;piece 1;piece 2;piece 3;"
        assert c.request(get("/hello")).body == b"hello"


def test_pipelined_requests_are_answered_in_order(server):
    with Conn(server.port) as c:
        c.send(get("/hello") + post("/echo", b"first body") + b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"
               + post("/echo", b"second") + get("/stream?n=2"))
        assert c.read_response().body == b"hello"
        assert c.read_response().body == b"first body"
        head = c.read_response("HEAD")
        assert head.status == 200 and head.header("Content-Length") == "5"
        assert c.read_response().body == b"second"
        assert c.read_response().body == b"piece 0;piece 1;"


def test_body_bytes_are_never_parsed_as_a_request(server):
    smuggled = get("/pid")  # inside the body: must be echoed, not served
    with Conn(server.port) as c:
        c.send(post("/echo", smuggled) + get("/hello"))
        assert c.read_response().body == smuggled
        assert c.read_response().body == b"hello"
        c.send(get("/hello", extra="Connection: close\r\n"))
        c.read_response()
        assert c.closed_by_server()


def test_date_and_server_headers(server):
    with Conn(server.port) as c:
        resp = c.request(get("/hello"))
    assert resp.header("Server").startswith("prefork/")
    assert resp.header("Date").endswith(" GMT")
    assert resp.header_count("Date") == 1


# --- request bodies


def test_chunked_upload_is_decoded(server):
    pieces = [b"a" * 1000, b"b", b"c" * 70000]
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunked(pieces, trailer=b"X-Sum: 1\r\n"))
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"".join(pieces)
        assert c.request(get("/hello")).body == b"hello"  # the connection is still in sync


def test_chunked_upload_sent_in_small_pieces(server):
    payload = b"line one\nline two\nlast"
    data = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked([payload[:5], payload[5:12], payload[12:]]))
    with Conn(server.port) as c:
        for i in range(0, len(data), 3):
            c.send(data[i:i + 3])
        assert c.read_response().body == payload


@pytest.mark.parametrize("how, expected", [
    ("read_n", b"line one\nline two\nlast"),
    ("readline", b"line one\n|line two\n|last"),
    ("readline_limit", b"line|,one|\n|line|,two|\n|last"),
    ("readlines", b"line one\n|line two\n|last"),
    ("iter", b"line one\n|line two\n|last"),
    ("read_none", b"line one\nline two\nlast"),
])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_wsgi_input_reads(server, how, expected, framing):
    payload = b"line one\nline two\nlast"
    if how == "readline_limit":
        payload = payload.replace(b" ", b",")
        expected = expected.replace(b" ", b",")
    with Conn(server.port) as c:
        if framing == "length":
            resp = c.request(post(f"/echo_by?how={how}", payload))
        else:
            resp = c.request(b"POST /echo_by?how=%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             % how.encode() + chunked([payload[:4], payload[4:9], payload[9:]]))
    assert resp.status == 200
    assert resp.body == expected


def test_unread_body_is_drained_and_connection_kept(server):
    with Conn(server.port) as c:
        resp = c.request(post("/no_read", b"x" * 100_000) + get("/hello"))
        assert resp.body == b"did not read"
        assert resp.header("Connection") is None
        assert c.read_response().body == b"hello"


def test_large_unread_body_closes_the_connection(server):
    body = b"x" * 2_000_000
    with Conn(server.port) as c:
        c.send(post("/no_read", b"")[:-len("Content-Length: 0\r\n\r\n")]
               + b"Content-Length: %d\r\n\r\n" % len(body))
        c.send(body[:100_000])
        resp = c.read_response()
        assert resp.body == b"did not read"
        assert resp.header("Connection") == "close"


def test_partly_read_body_rest_is_drained(server):
    with Conn(server.port) as c:
        resp = c.request(post("/read_some?n=10", b"0123456789abcdef" * 10))
        assert resp.body == b"read 10"
        assert c.request(get("/hello")).body == b"hello"


# --- 100-continue


def test_expect_100_continue_sent_on_first_read(server):
    body = b"payload after continue"
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body))
        interim = c.read_response()
        assert interim.status == 100
        c.send(body)
        resp = c.read_response()
        assert resp.status == 200 and resp.body == body
        assert c.request(get("/hello")).body == b"hello"


def test_expect_100_continue_not_sent_when_app_does_not_read(server):
    with Conn(server.port) as c:
        c.send(b"POST /no_read HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"did not read"
        assert b"100 Continue" not in resp.raw_head
        # the client may or may not send the body now: the connection cannot be reused
        assert resp.header("Connection") == "close"
        assert c.closed_by_server()


def test_expect_100_continue_not_sent_when_body_already_sent(server):
    with Conn(server.port) as c:
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
        resp = c.read_response()
        assert resp.status == 200 and resp.body == b"hello"


# --- response framing


def test_head_has_length_and_no_body(server):
    with Conn(server.port) as c:
        resp = c.request(b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD")
        assert resp.status == 200
        assert resp.header("Content-Length") == "5"
        # had the server sent the body, it would be read as the next response
        assert c.request(get("/pid")).body.isdigit()


def test_head_of_a_stream_has_no_body_and_no_chunking(server):
    with Conn(server.port) as c:
        resp = c.request(b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n", "HEAD")
        assert resp.header("Transfer-Encoding") is None
        assert c.request(get("/hello")).body == b"hello"


@pytest.mark.parametrize("path, has_length", [
    ("/status?code=204", False),
    ("/status?code=204&cl=9", False),
    ("/status?code=304&cl=9", True),
    ("/status?code=304", False),
    ("/status_generator?code=304", False),
    ("/status_generator?code=204", False),
])
def test_no_body_for_204_and_304(server, path, has_length):
    with Conn(server.port) as c:
        resp = c.request(get(path))
        assert (resp.header("Content-Length") is not None) == has_length
        assert resp.header("Transfer-Encoding") is None
        assert c.request(get("/hello")).body == b"hello"  # no stray body bytes


def test_app_1xx_status_is_an_invalid_response(server):
    # A 1xx is interim: sent as the answer, the client would wait for the real one.
    with Conn(server.port) as c:
        c.send(get("/status?code=103&cl=9"))
        data = c.read_until_close()
    assert data.startswith(b"HTTP/1.1 500 ")
    server.wait_for_log(r"'103[^']*' is not a final status")


def test_body_longer_than_content_length_is_truncated_and_closed(server):
    with Conn(server.port) as c:
        resp = c.request(get("/too_long"))
        assert resp.body == b"12345"
        assert c.closed_by_server()
    server.wait_for_log(r"sent more than its Content-Length 5")


def test_body_shorter_than_content_length_closes(server):
    with Conn(server.port) as c:
        c.send(get("/too_short"))
        data = c.read_until_close()
    assert data.endswith(b"\r\n\r\n12345")
    server.wait_for_log(r"sent 5 bytes of its Content-Length 10")


def test_response_splitting_is_a_500(server):
    for path, name in [("/bad_header", "X-Evil"), ("/bad_status", "status")]:
        start = len(server.log_text())
        with Conn(server.port) as c:
            c.send(get(path))
            data = c.read_until_close()
        assert data.startswith(b"HTTP/1.1 500 ")
        assert b"pwned" not in data and b"X-Evil" not in data
        assert b"Connection: close" in data
        server.wait_for_log(rf"\[ERROR\] invalid response to 'GET {path} HTTP/1.1': .*{name}", start=start)


def test_hop_by_hop_headers_from_the_app_are_not_passed(server):
    with Conn(server.port) as c:
        resp = c.request(get("/hop_by_hop"))
        assert resp.body == b"hop!"
        assert resp.header("X-Kept") == "yes"
        for name in ("Upgrade", "Keep-Alive"):
            assert resp.header(name) is None
        assert resp.header_count("Transfer-Encoding") == 1  # the server's own framing
        assert resp.header("Connection") is None
        assert c.request(get("/hello")).body == b"hello"


def test_connection_close_from_the_app_closes(server):
    with Conn(server.port) as c:
        resp = c.request(get("/app_close"))
        assert resp.header("Connection") == "close" and resp.body == b"bye"
        assert c.closed_by_server()


def test_write_callable_then_list(server):
    with Conn(server.port) as c:
        resp = c.request(get("/write_and_list"))
        assert resp.body == b"one two three"


# --- wsgi.file_wrapper


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "data.bin"
    path.write_bytes(os.urandom(1_500_000))
    return path


@pytest.mark.parametrize("offset, cl", [(None, None), (1000, None), (None, 4096), (777, 300_000)])
def test_file_wrapper(server, data_file, offset, cl):
    content = data_file.read_bytes()
    query = f"path={data_file}"
    if offset is not None:
        query += f"&offset={offset}"
        content = content[offset:]
    if cl is not None:
        query += f"&cl={cl}"
        content = content[:cl]
    with Conn(server.port) as c:
        resp = c.request(get(f"/file?{query}"))
        assert resp.header("Content-Length") == str(len(content))
        assert resp.body == content
        assert c.request(get("/hello")).body == b"hello"


def test_file_wrapper_head_and_bytesio(server, data_file):
    with Conn(server.port) as c:
        resp = c.request(f"HEAD /file?path={data_file} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), "HEAD")
        assert resp.header("Content-Length") == str(data_file.stat().st_size)
        assert c.request(get("/file_bytesio")).body == b"in memory " * 1000
        assert c.request(get("/hello")).body == b"hello"


def test_file_wrapper_longer_content_length_than_file_closes(server, data_file):
    size = data_file.stat().st_size
    with Conn(server.port) as c:
        c.send(get(f"/file?path={data_file}&offset={size - 10}&cl=50"))
        data = c.read_until_close()
    assert data.endswith(b"\r\n\r\n" + data_file.read_bytes()[-10:])


# --- bad requests: a short 4xx, the connection closed, the worker alive


def test_smuggling_attempt_is_rejected_and_worker_survives(server):
    pid = worker_pid(server)
    start = len(server.log_text())
    attack = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"0\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    with Conn(server.port) as c:
        c.send(attack)
        data = c.read_until_close()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert data.count(b"HTTP/1.1") == 1  # the smuggled request was not served
    assert b"Connection: close" in data
    assert worker_pid(server) == pid
    server.wait_for_log(r"rejected request from 127.0.0.1:\d+: 400 Bad Request "
                        r"\(both Content-Length and Transfer-Encoding\)", start=start)
    assert "Traceback" not in server.log_text()[start:]


@pytest.mark.parametrize("data, status", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),
])
def test_bad_requests_get_short_error_and_close(server, data, status):
    with Conn(server.port) as c:
        c.send(data)
        resp = c.read_response()
        assert resp.status == status
        assert resp.header("Connection") == "close"
        assert resp.header("Content-Length") == str(len(resp.body))
        assert c.closed_by_server()


def test_bad_chunked_body_is_an_error_even_if_app_swallows_it(server):
    with Conn(server.port) as c:
        c.send(b"POST /swallow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc")
        c.sock.shutdown(socket.SHUT_WR)  # cut short: the body can never complete
        resp = c.read_response()
    assert resp.status == 400
    with Conn(server.port) as c:
        c.send(b"POST /swallow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        assert c.read_response().status == 400


def test_client_vanishing_mid_body_leaves_the_worker_alive(server):
    pid = worker_pid(server)
    start = len(server.log_text())
    for _ in range(3):
        with Conn(server.port) as c:
            c.send(post("/echo", b"x" * 100)[:-60])
    assert worker_pid(server) == pid
    assert "Traceback" not in server.log_text()[start:]


# --- wsgiref.validate: the server as PEP 3333 requires


@pytest.mark.parametrize("request_bytes, expected", [
    (get("/v_hello"), b"hello"),
    (post("/v_echo_by?how=read_n", b"abc\ndef"), b"abc\ndef"),
    (post("/v_echo_by?how=readline", b"abc\ndef"), b"abc\n|def"),
    (post("/v_echo_by?how=readlines", b"abc\ndef"), b"abc\n|def"),
    (post("/v_echo_by?how=iter", b"abc\ndef"), b"abc\n|def"),
    (b"POST /v_echo_by?how=read_none HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     + chunked([b"ab", b"cd"]), b"abcd"),
    (get("/v_stream?n=2"), b"piece 0;piece 1;"),
    (b"GET /v_stream?n=2 HTTP/1.0\r\n\r\n", b"piece 0;piece 1;"),
    (get("/v_status?code=404"), b"some body"),
    (get("/v_status?code=204"), b""),
    (get("/v_status?code=304"), b""),
    (get("/v_write"), b"one two three"),
    (get("/v_environ/a%20b?q=1", extra="Cookie: a=1\r\nCookie: b=2\r\n"), None),
])
def test_validator_wrapped_apps(server, request_bytes, expected):
    start = len(server.log_text())
    with Conn(server.port) as c:
        resp = c.request(request_bytes)
    log = server.log_text()[start:]
    assert "AssertionError" not in log and "Warning" not in log, log
    assert resp.status in (200, 204, 304, 404)
    if expected is not None:
        assert resp.body == expected


def test_validator_wrapped_file(server, data_file):
    with Conn(server.port) as c:
        resp = c.request(get(f"/v_file?path={data_file}&cl=1000"))
    assert resp.body == data_file.read_bytes()[:1000]


def test_environ(server):
    import json

    with Conn(server.port) as c:
        resp = c.request(b"GET http://example.org:8080/environ_json/p%C3%A9?x=1 HTTP/1.1\r\nHost: other\r\n"
                         b"Cookie: a=1\r\nCookie: b=2\r\nX-Multi: 1\r\nX-Multi: 2\r\n"
                         b"X_Dropped: evil\r\nContent-Type: text/x\r\n\r\n")
    env = json.loads(resp.body)
    assert env["PATH_INFO"] == "/environ_json/p\u00c3\u00a9"  # PEP 3333: bytes as latin-1
    assert env["RAW_URI"] == "http://example.org:8080/environ_json/p%C3%A9?x=1"
    assert env["HTTP_HOST"] == "example.org:8080"
    assert env["SERVER_NAME"] == "example.org"
    assert env["SERVER_PORT"] == str(server.port)  # where it was received, not the target's port
    assert env["QUERY_STRING"] == "x=1"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_MULTI"] == "1,2"
    assert env["CONTENT_TYPE"] == "text/x"
    assert "HTTP_X_DROPPED" not in env
    assert "HTTP_CONTENT_TYPE" not in env


# --- the sync worker's keep-alive policy


def test_an_idle_kept_connection_makes_no_newcomer_wait_and_is_not_closed_under_its_client():
    # Closing an idle kept connection unannounced when someone else arrives
    # loses the request its client may be sending at that moment (issue 12);
    # holding the worker for it would make the newcomer wait. Neither: the
    # newcomer is served at once and the idle connection stays open.
    with serve("http_apps:router", 1, cwd=APPS, keepalive=30) as server:
        with Conn(server.port) as a:
            assert a.request(get("/hello")).header("Connection") is None  # kept, idle
            started = time.monotonic()
            with Conn(server.port) as b:
                assert b.request(get("/hello")).body == b"hello"
            assert time.monotonic() - started < 1.5  # not a's 30 s window
            assert not a.closed_by_server(timeout=0.3)
            assert a.request(get("/hello")).body == b"hello"  # and a goes on


def test_an_idle_kept_connection_is_closed_when_its_window_ends():
    with serve("http_apps:router", 1, cwd=APPS, keepalive=0.5) as server:
        with Conn(server.port) as a, Conn(server.port) as b:
            assert a.request(get("/hello")).body == b"hello"
            assert b.request(get("/hello")).body == b"hello"  # two idle connections, one worker
            started = time.monotonic()
            assert a.closed_by_server(timeout=3) and b.closed_by_server(timeout=3)
            assert time.monotonic() - started < 2.5


def test_response_says_close_when_another_client_waits():
    with serve("http_apps:router", 1, cwd=APPS, keepalive=30) as server:
        with Conn(server.port) as a:
            a.send(get("/sleep_briefly"))  # the worker is busy with a…
            time.sleep(0.1)
            with Conn(server.port) as b:  # …while b waits in the listen queue
                b.send(get("/hello"))
                resp = a.read_response()
                assert resp.header("Connection") == "close"
                assert b.read_response().body == b"hello"


def test_one_worker_serves_two_keep_alive_clients_promptly():
    with serve("http_apps:router", 1, cwd=APPS, keepalive=30) as server:
        results = []

        def client():
            with requests.Session() as session:
                for _ in range(15):
                    results.append(session.get(server.url + "/pid", timeout=5).status_code)

        started = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert results == [200] * 30
        assert time.monotonic() - started < 5


def test_keep_alive_zero_closes_every_connection(worker_settings):
    with serve("http_apps:router", 1, cwd=APPS, **worker_settings, keepalive=0) as server:
        with Conn(server.port) as c:
            resp = c.request(get("/hello"))
            assert resp.header("Connection") == "close"
            assert c.closed_by_server()


def test_idle_connection_is_closed_after_keep_alive_seconds(worker_settings):
    with serve("http_apps:router", 1, cwd=APPS, **worker_settings, keepalive=0.5) as server:
        with Conn(server.port) as c:
            c.request(get("/hello"))
            started = time.monotonic()
            assert c.closed_by_server(timeout=3)
            assert 0.3 < time.monotonic() - started < 2


def test_graceful_stop_does_not_wait_for_idle_keep_alive(worker_settings):
    with serve("http_apps:router", 1, cwd=APPS, **worker_settings, keepalive=30) as server:
        with Conn(server.port) as c:
            c.request(get("/hello"))
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            assert server.proc.wait(10) == 0
            assert time.monotonic() - started < 1.5
            assert c.closed_by_server(timeout=1)


def test_stopping_worker_answers_with_close(worker_settings):
    with serve("http_apps:router", 1, cwd=APPS, **worker_settings, keepalive=30, graceful_timeout=10) as server:
        with Conn(server.port) as c:
            c.send(get("/sleep_briefly?s=1"))
            time.sleep(0.3)
            server.send_signal(signal.SIGTERM)
            resp = c.read_response()
            assert resp.status == 200 and resp.header("Connection") == "close"


# --- deadlines for slow clients


def test_slow_head_gets_408_and_worker_survives(worker_settings):
    with serve("http_apps:router", 1, cwd=APPS, **worker_settings, timeout=2) as server:
        pid = server.worker_pids()[0]
        data = get("/hello")
        started = time.monotonic()
        with Conn(server.port, timeout=10) as c:
            try:
                for byte in data:  # one byte every 0.3 s: the head would take ~8 s
                    c.send(bytes([byte]))
                    time.sleep(0.3)
            except OSError:
                pass
            resp = c.read_response()
        elapsed = time.monotonic() - started
        assert resp.status == 408
        assert 1.5 < elapsed < 5
        assert server.worker_pids() == [pid]
        assert "WORKER TIMEOUT" not in server.log_text()
        with Conn(server.port) as c:
            assert c.request(get("/hello")).body == b"hello"


def test_stalled_head_gets_408(worker_settings):
    with serve("http_apps:router", 1, cwd=APPS, **worker_settings, timeout=1) as server:
        with Conn(server.port, timeout=10) as c:
            started = time.monotonic()
            c.send(b"GET / HTTP/1.1\r\nHo")
            resp = c.read_response()
            assert resp.status == 408
            assert time.monotonic() - started < 4


def test_slow_body_gets_408_and_worker_survives(worker_settings):
    with serve("http_apps:router", 1, cwd=APPS, **worker_settings, timeout=2) as server:
        pid = server.worker_pids()[0]
        started = time.monotonic()
        with Conn(server.port, timeout=10) as c:
            c.send(b"POST /swallow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            try:
                for _ in range(30):
                    c.send(b"x")
                    time.sleep(0.25)
            except OSError:
                pass
            resp = c.read_response()
        assert resp.status == 408  # even though the app swallowed the error
        assert time.monotonic() - started < 6
        assert server.worker_pids() == [pid]
        assert "WORKER TIMEOUT" not in server.log_text()


def test_silent_connection_does_not_hold_the_worker_forever(worker_settings):
    with serve("http_apps:router", 1, cwd=APPS, **worker_settings, timeout=1) as server:
        with Conn(server.port, timeout=10) as idle:
            started = time.monotonic()
            assert idle.closed_by_server(timeout=4)  # closed without a response
            assert time.monotonic() - started < 3.5
        with Conn(server.port) as c:
            assert c.request(get("/hello")).body == b"hello"


# --- limits and header_map from the command line


def test_limits_from_settings(worker_settings):
    with serve("http_apps:router", 1, cwd=APPS, **worker_settings, limit_request_line=30, limit_request_fields=3,
               limit_request_field_size=40, limit_request_body=10) as server:
        cases = [
            (get("/" + "a" * 40), 414),
            (get("/hello", extra="A: 1\r\nB: 2\r\nC: 3\r\n"), 431),
            (get("/hello", extra="X-Long: " + "v" * 40 + "\r\n"), 431),
            (post("/length", b"x" * 11), 413),
            (b"POST /swallow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             + chunked([b"x" * 6, b"y" * 6]), 413),
            (post("/length", b"x" * 10), 200),
        ]
        for data, status in cases:
            with Conn(server.port) as c:
                assert c.request(data).status == status, data


def test_limit_request_field_size_flag_spellings(tmp_path):
    from prefork.cli import load_config

    for flag in ("--limit-request-field_size", "--limit-request-field-size"):
        cfg = load_config([flag, "100", "x:app"], {})
        assert cfg.limit_request_field_size == 100


def test_header_map_refuse():
    with serve("http_apps:router", 1, cwd=APPS, header_map="refuse") as server:
        with Conn(server.port) as c:
            assert c.request(get("/hello", extra="X_Forwarded_For: 1.2.3.4\r\n")).status == 400


def test_header_map_dangerous_passes_underscores():
    import json

    with serve("http_apps:router", 1, cwd=APPS, header_map="dangerous") as server:
        with Conn(server.port) as c:
            env = json.loads(c.request(get("/environ_json", extra="X_Custom: 1\r\n")).body)
            assert env["HTTP_X_CUSTOM"] == "1"


# --- unix sockets get the same treatment


def test_keep_alive_and_sendfile_over_a_unix_socket(tmp_path, data_file, worker_settings):
    path = tmp_path / "s.sock"
    with serve("http_apps:router", 1, cwd=APPS, **worker_settings, bind=f"unix:{path}") as server:
        assert server  # started
        with Conn(0, family=socket.AF_UNIX, address=str(path)) as c:
            assert c.request(get("/hello")).body == b"hello"
            resp = c.request(get(f"/file?path={data_file}"))
            assert resp.body == data_file.read_bytes()


def test_a_kept_connection_makes_nobody_wait_on_another_listener(tmp_path):
    first, second = tmp_path / "a.sock", tmp_path / "b.sock"
    with serve("http_apps:router", 1, cwd=APPS, keepalive=30, bind=[f"unix:{first}", f"unix:{second}"]):
        with Conn(0, family=socket.AF_UNIX, address=str(first)) as a:
            assert a.request(get("/hello")).header("Connection") is None  # kept
            started = time.monotonic()
            with Conn(0, family=socket.AF_UNIX, address=str(second)) as b:
                assert b.request(get("/hello")).body == b"hello"
            assert time.monotonic() - started < 1.5
            assert a.request(get("/hello")).body == b"hello"


# --- --http-parser httptools: the same server with llhttp checking the heads

needs_httptools = pytest.mark.skipif(
    importlib.util.find_spec("httptools") is None, reason="httptools is not installed")


@pytest.fixture(scope="module")
def llhttp_server():
    with serve("http_apps:router", 1, cwd=APPS, loglevel="debug", http_parser="httptools") as s:
        yield s


@needs_httptools
def test_httptools_parser_serves_get_and_chunked_post(llhttp_server):
    with Conn(llhttp_server.port) as c:
        resp = c.request(get("/hello"))
        assert (resp.status, resp.body) == (200, b"hello")
        c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + chunked([b"hello ", b"world"]))
        resp = c.read_response()
        assert (resp.status, resp.body) == (200, b"hello world")
        assert c.request(get("/hello")).status == 200  # the connection was kept


@needs_httptools
@pytest.mark.parametrize("data, status, detail", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400, "obsolete line folding"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, "more than one Host field"),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP/2.0 is not supported"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431, "more than 100"),
    # Valid, but llhttp refuses it: answered 400 by the httptools parser only.
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n", 400,
     "header section refused by llhttp"),
])
def test_httptools_parser_refuses_bad_requests(llhttp_server, data, status, detail):
    start = len(llhttp_server.log_text())
    with Conn(llhttp_server.port) as c:
        c.send(data)
        resp = c.read_response()
        assert resp.status == status
        assert resp.header("Connection") == "close"
        assert c.closed_by_server()
    llhttp_server.wait_for_log(r"rejected request from 127\.0\.0\.1:\d+: %d .*%s"
                               % (status, re.escape(detail)), start=start)
    assert "Traceback" not in llhttp_server.log_text()[start:]
