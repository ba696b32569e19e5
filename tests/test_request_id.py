"""Request ids: taken from trusted peers, else generated; in the environ, the
response and the access log."""

import re

from conftest import raw_request
from observing import body_of, header_of

APP = "observed:app"
GENERATED = re.compile(r"[0-9a-f]{24}")


def get(port, path="/", headers=()):
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
    reply = raw_request(port, f"GET {path} HTTP/1.1\r\nHost: h\r\n{lines}Connection: close\r\n\r\n"
                        .encode())
    assert reply.startswith(b"HTTP/1.1 200"), reply
    return reply


def seen_by_app(reply):
    return body_of(reply).decode().split()[0]


def test_generated_ids_are_unique_and_reach_the_app_and_the_client(test_app):
    server = test_app(APP, 2)
    ids = set()
    for _ in range(6):
        reply = get(server.port)
        (sent,) = header_of(reply, "X-Request-ID")
        assert GENERATED.fullmatch(sent)
        assert seen_by_app(reply) == sent
        ids.add(sent)
    assert len(ids) == 6


def test_a_trusted_peer_s_id_is_kept(test_app):
    server = test_app(APP, 1)  # 127.0.0.1 is trusted by default (--forwarded-allow-ips)
    reply = get(server.port, headers=[("X-Request-ID", "edge-42.abc")])
    assert header_of(reply, "X-Request-ID") == ["edge-42.abc"]
    assert seen_by_app(reply) == "edge-42.abc"


def test_an_untrusted_peer_s_id_is_replaced(test_app):
    server = test_app(APP, 1, forwarded_allow_ips="10.1.2.3")
    reply = get(server.port, headers=[("X-Request-ID", "edge-42")])
    (sent,) = header_of(reply, "X-Request-ID")
    assert GENERATED.fullmatch(sent) and seen_by_app(reply) == sent


def test_an_id_that_is_not_a_plain_token_is_replaced(test_app):
    server = test_app(APP, 1)
    for bad in ("has space", "x" * 201, "quote\"d", "semi;colon"):
        (sent,) = header_of(get(server.port, headers=[("X-Request-ID", bad)]), "X-Request-ID")
        assert GENERATED.fullmatch(sent), bad


def test_the_app_s_own_header_wins_and_is_not_doubled(test_app):
    server = test_app(APP, 1)
    reply = get(server.port, "/?header=from-app")
    assert header_of(reply, "X-Request-ID") == ["from-app"]


def test_custom_header_name_and_off(test_app):
    server = test_app(APP, 1, request_id_header="X-Correlation-ID")
    reply = get(server.port, headers=[("X-Correlation-ID", "corr-1")])
    assert header_of(reply, "X-Correlation-ID") == ["corr-1"]
    assert header_of(reply, "X-Request-ID") == []
    off = test_app(APP, 1, request_id_header="off")
    reply = get(off.port, headers=[("X-Request-ID", "ignored")])
    assert header_of(reply, "X-Request-ID") == []
    assert seen_by_app(reply) == "-"


def test_the_access_log_atom(test_app, tmp_path):
    access = tmp_path / "access.log"
    server = test_app(APP, 1, accesslog=str(access), access_log_format="%(s)s %({x-request-id}o)s")
    sent = header_of(get(server.port), "X-Request-ID")[0]
    kept = header_of(get(server.port, headers=[("X-Request-ID", "abc")]), "X-Request-ID")[0]
    from conftest import wait_until

    assert wait_until(lambda: len(access.read_text().splitlines()) == 2 if access.exists() else 0, 5)
    assert access.read_text().splitlines() == [f"200 {sent}", f"200 {kept}"]
