"""Who the client is behind a proxy: REMOTE_ADDR and wsgi.url_scheme from plain data."""

import pytest

from prefork.http.errors import BadRequest
from prefork.http.forwarded import (
    Client,
    ForwardedRules,
    TrustedPeers,
    forwarded_elements,
)
from prefork.settings import BY_NAME

GUNICORN_SCHEME_HEADERS = BY_NAME["secure_scheme_headers"].default
LOCAL = ["127.0.0.1", "::1"]


def client(peer, headers, allow=LOCAL, scheme="http", scheme_headers=GUNICORN_SCHEME_HEADERS):
    return ForwardedRules(allow, scheme_headers).client(peer, headers, scheme)


NGINX = ("127.0.0.1", "50312")
STRANGER = ("203.0.113.9", "40000")

CASES = [
    # untrusted peers change nothing, whatever they send
    (STRANGER, [], LOCAL, Client("203.0.113.9", "40000", "http")),
    (STRANGER, [("X-Forwarded-For", "1.2.3.4")], LOCAL, Client("203.0.113.9", "40000", "http")),
    (STRANGER, [("X-Forwarded-Proto", "https")], LOCAL, Client("203.0.113.9", "40000", "http")),
    (STRANGER, [("Forwarded", "for=1.2.3.4;proto=https")], LOCAL, Client("203.0.113.9", "40000", "http")),
    (STRANGER, [("X-Forwarded-Ssl", "on"), ("X-Forwarded-Proto", "http")], LOCAL,
     Client("203.0.113.9", "40000", "http")),  # not even a 400: the headers are not ours to judge
    # a trusted proxy: its last hop is the client
    (NGINX, [], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("X-Forwarded-For", "198.51.100.7")], LOCAL, Client("198.51.100.7", "", "http")),
    (NGINX, [("x-forwarded-for", "198.51.100.7")], LOCAL, Client("198.51.100.7", "", "http")),
    (NGINX, [("X-Forwarded-For", "  198.51.100.7 ")], LOCAL, Client("198.51.100.7", "", "http")),
    (NGINX, [("X-Forwarded-For", "6.6.6.6, 198.51.100.7")], LOCAL, Client("198.51.100.7", "", "http")),
    (NGINX, [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.7")], LOCAL,
     Client("198.51.100.7", "", "http")),
    (NGINX, [("X-Forwarded-For", "198.51.100.7:5555")], LOCAL, Client("198.51.100.7", "5555", "http")),
    (NGINX, [("X-Forwarded-For", "2001:db8::7")], LOCAL, Client("2001:db8::7", "", "http")),
    (NGINX, [("X-Forwarded-For", "2001:DB8:0::7")], LOCAL, Client("2001:db8::7", "", "http")),
    (NGINX, [("X-Forwarded-For", "[2001:db8::7]:443")], LOCAL, Client("2001:db8::7", "443", "http")),
    # an unusable last hop keeps the peer: it is never skipped to believe the client's part
    (NGINX, [("X-Forwarded-For", "198.51.100.7, unknown")], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("X-Forwarded-For", "198.51.100.7, 999.1.1.1")], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("X-Forwarded-For", "01.2.3.4")], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("X-Forwarded-For", "[1.2.3.4]")], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("X-Forwarded-For", "1.2.3.4:99999")], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("X-Forwarded-For", "")], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("X-Forwarded-For", " , ")], LOCAL, Client("127.0.0.1", "50312", "http")),
    # chains: listed proxies are skipped, the first other hop from the right is the client
    (NGINX, [("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.0.0.2, 10.0.0.3")], [*LOCAL, "10.0.0.0/8"],
     Client("198.51.100.7", "", "http")),
    (("10.1.2.3", "1"), [("X-Forwarded-For", "198.51.100.7, 10.0.0.2")], ["10.0.0.0/8"],
     Client("198.51.100.7", "", "http")),
    (NGINX, [("X-Forwarded-For", "10.0.0.1, 10.0.0.2")], [*LOCAL, "10.0.0.0/8"], Client("10.0.0.1", "", "http")),
    # "*" trusts any peer, but lists no hop: only the last hop is taken
    (STRANGER, [("X-Forwarded-For", "6.6.6.6, 198.51.100.7")], ["*"], Client("198.51.100.7", "", "http")),
    (STRANGER, [("X-Forwarded-For", "6.6.6.6, 10.0.0.2")], ["*", "10.0.0.0/8"], Client("6.6.6.6", "", "http")),
    # networks, IPv6 and IPv4-mapped peers
    (("10.9.8.7", "1"), [("X-Forwarded-For", "1.1.1.1")], ["10.0.0.0/8"], Client("1.1.1.1", "", "http")),
    (("11.9.8.7", "1"), [("X-Forwarded-For", "1.1.1.1")], ["10.0.0.0/8"], Client("11.9.8.7", "1", "http")),
    (("2001:db8::5", "1"), [("X-Forwarded-For", "1.1.1.1")], ["2001:db8::/32"], Client("1.1.1.1", "", "http")),
    (("::ffff:127.0.0.1", "1"), [("X-Forwarded-For", "1.1.1.1")], ["127.0.0.1"], Client("1.1.1.1", "", "http")),
    (("::ffff:10.0.0.1", "1"), [("X-Forwarded-For", "1.1.1.1")], ["127.0.0.1"], Client("::ffff:10.0.0.1", "1", "http")),
    (("::1", "1"), [("X-Forwarded-For", "1.1.1.1")], LOCAL, Client("1.1.1.1", "", "http")),
    # unix-socket peers (None) are trusted; without a forwarded address they are local
    (None, [], LOCAL, Client("127.0.0.1", "", "http")),
    (None, [], [], Client("127.0.0.1", "", "http")),
    (None, [("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-Proto", "https")], [],
     Client("198.51.100.7", "", "https")),
    # the secure-scheme headers (Gunicorn's semantics)
    (NGINX, [("X-Forwarded-Proto", "https")], LOCAL, Client("127.0.0.1", "50312", "https")),
    (NGINX, [("X-FORWARDED-PROTO", "https")], LOCAL, Client("127.0.0.1", "50312", "https")),
    (NGINX, [("X-Forwarded-Proto", "HTTPS")], LOCAL, Client("127.0.0.1", "50312", "http")),  # values are exact
    (NGINX, [("X-Forwarded-Proto", "http")], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("X-Forwarded-Ssl", "on")], LOCAL, Client("127.0.0.1", "50312", "https")),
    (NGINX, [("X-Forwarded-Protocol", "ssl")], LOCAL, Client("127.0.0.1", "50312", "https")),
    (NGINX, [("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "on")], LOCAL,
     Client("127.0.0.1", "50312", "https")),
    # RFC 7239 Forwarded, used when there is no X-Forwarded-For / secure-scheme header
    (NGINX, [("Forwarded", "for=198.51.100.7")], LOCAL, Client("198.51.100.7", "", "http")),
    (NGINX, [("Forwarded", "for=198.51.100.7;proto=https;by=203.0.113.43")], LOCAL,
     Client("198.51.100.7", "", "https")),
    (NGINX, [("Forwarded", 'For="[2001:db8:cafe::17]:4711";Proto=HTTPS')], LOCAL,
     Client("2001:db8:cafe::17", "4711", "https")),
    (NGINX, [("Forwarded", "for=6.6.6.6;proto=https, for=198.51.100.7;proto=http")], LOCAL,
     Client("198.51.100.7", "", "http")),
    (NGINX, [("Forwarded", "for=6.6.6.6;proto=https"), ("Forwarded", "for=198.51.100.7")], LOCAL,
     Client("198.51.100.7", "", "http")),
    (NGINX, [("Forwarded", "for=198.51.100.7;proto=https, for=10.0.0.2;proto=http")], [*LOCAL, "10.0.0.0/8"],
     Client("198.51.100.7", "", "https")),
    (NGINX, [("Forwarded", "for=unknown;proto=https")], LOCAL, Client("127.0.0.1", "50312", "https")),
    (NGINX, [("Forwarded", "for=_hidden")], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("Forwarded", "proto=gopher")], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("Forwarded", "for=[2001:db8::1]")], LOCAL, Client("127.0.0.1", "50312", "http")),  # must be quoted
    # malformed Forwarded headers are ignored whole
    (NGINX, [("Forwarded", "for=198.51.100.7 for=6.6.6.6")], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("Forwarded", "for=198.51.100.7;for=6.6.6.6")], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("Forwarded", 'for="198.51.100.7')], LOCAL, Client("127.0.0.1", "50312", "http")),
    (NGINX, [("Forwarded", "198.51.100.7")], LOCAL, Client("127.0.0.1", "50312", "http")),
    # X-Forwarded-* win over Forwarded, which nginx passes on from the client untouched
    (NGINX, [("Forwarded", "for=6.6.6.6;proto=https"), ("X-Forwarded-For", "198.51.100.7"),
             ("X-Forwarded-Proto", "http")], LOCAL, Client("198.51.100.7", "", "http")),
    (NGINX, [("Forwarded", "for=6.6.6.6"), ("X-Forwarded-Proto", "https")], LOCAL,
     Client("6.6.6.6", "", "https")),
]


@pytest.mark.parametrize("peer, headers, allow, expected", CASES)
def test_client(peer, headers, allow, expected):
    assert client(peer, headers, allow) == expected


def test_https_listener_keeps_its_scheme_without_headers():
    assert client(STRANGER, [("X-Forwarded-Proto", "http")], scheme="https").scheme == "https"
    assert client(NGINX, [], scheme="https").scheme == "https"
    assert client(NGINX, [("X-Forwarded-Proto", "http")], scheme="https").scheme == "http"


@pytest.mark.parametrize("headers", [
    [("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")],
    [("X-Forwarded-Proto", "http"), ("X-Forwarded-Protocol", "ssl")],
    [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")],
])
def test_disagreeing_scheme_headers_are_a_bad_request(headers):
    with pytest.raises(BadRequest) as info:
        client(NGINX, headers)
    assert info.value.status == 400


def test_custom_scheme_headers():
    headers = {"X-SCHEME": "https"}
    assert client(NGINX, [("X-Scheme", "https")], scheme_headers=headers).scheme == "https"
    assert client(NGINX, [("X-Forwarded-Proto", "https")], scheme_headers=headers).scheme == "http"
    assert client(NGINX, [("X-Forwarded-Proto", "https")], scheme_headers={}).scheme == "http"


def test_trusted_peers():
    trusted = TrustedPeers(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
    assert trusted.trusts(None)
    assert trusted.trusts(("10.255.0.1", "1")) and trusted.trusts(("2001:db8::9", "1"))
    assert not trusted.trusts(("11.0.0.1", "1")) and not trusted.trusts(("", ""))
    assert not trusted.trusts(("not-an-ip", "1"))
    everyone = TrustedPeers(["*"])
    assert everyone.trusts(("8.8.8.8", "53")) and not everyone.lists("8.8.8.8")
    nobody = TrustedPeers([])
    assert not nobody.trusts(("127.0.0.1", "1")) and nobody.trusts(None)


@pytest.mark.parametrize("value, elements", [
    ("for=1.2.3.4", [{"for": "1.2.3.4"}]),
    ("for=1.2.3.4;proto=http, for=5.6.7.8", [{"for": "1.2.3.4", "proto": "http"}, {"for": "5.6.7.8"}]),
    (' FOR="[::1]:80" ;  by=x ', [{"for": "[::1]:80", "by": "x"}]),
    ('for="a\\"b"', [{"for": 'a"b'}]),
    ("for=1.2.3.4,,for=5.6.7.8", [{"for": "1.2.3.4"}, {"for": "5.6.7.8"}]),
    (";;", []),
    ("", []),
    ("for", []),
    ("for=", []),
    ("for=a b", []),
    ("for=a=b", []),
    ("for=a;for=b", []),
    ("for=\x00", []),
])
def test_forwarded_elements(value, elements):
    assert forwarded_elements(value) == elements


def test_forwarded_parser_is_linear():
    """Long hostile values are rejected or parsed quickly (no regex backtracking)."""
    import time

    for value in ["; " * 4000 + "=", ", " * 4000 + "x", "for=a;" * 1500 + " =", 'for="' + "\\" * 8000]:
        started = time.perf_counter()
        client(NGINX, [("Forwarded", value)])
        assert time.perf_counter() - started < 0.5
