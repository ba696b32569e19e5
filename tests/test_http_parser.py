"""The sans-IO request parser, table-driven: each case is the bytes a client
sends and either the request they must parse into or the exact status they
must be refused with. Smuggling vectors (CL.TE, TE.CL, obfuscated
Transfer-Encoding, duplicate framing fields) are among them."""

import pytest
from head_parsers import LLHTTP_STRICTER, PARSERS, llhttp_parse_head

from prefork.http.body import MAX_CHUNK_LINE, ChunkedBody, LengthBody
from prefork.http.errors import HTTPError
from prefork.http.request import SINGLETON_FIELDS, Limits, parse_head

MORE = "need more data"


def message(raw, limits, parse=parse_head):
    """Parse a whole message: head, then body up to the end of ``raw``."""
    parsed = parse(raw, limits)
    if parsed is None:
        return MORE
    req, used = parsed
    body = ChunkedBody(limits) if req.chunked else LengthBody(req.content_length)
    payload = body.feed(raw[used:])
    body.eof()
    return {
        "method": req.method, "target": req.target, "path": req.path, "query": req.query,
        "version": req.version, "host": req.host, "headers": req.headers,
        "keep_alive": req.keep_alive, "chunked": req.chunked,
        "expect_continue": req.expect_continue, "body": payload, "leftover": body.leftover,
        "trailers": getattr(body, "trailers", []),
    }


def outcome(raw, limits=None, parse=parse_head):
    try:
        return message(raw, limits or Limits(), parse)
    except HTTPError as exc:
        return exc.status


def head(*lines, body=b""):
    """A request from its lines (str, latin-1), CRLF-terminated, plus a body."""
    return "".join(line + "\r\n" for line in lines).encode("latin-1") + b"\r\n" + body


GET = "GET / HTTP/1.1"
H = "Host: example.com"
LONG = "a" * 5000

# (id, bytes, expected, limits): expected is a status, MORE, or a dict the
# parsed message must contain.
CASES = [
    # --- valid request lines and targets
    ("get", head(GET, H), {"method": "GET", "path": "/", "query": "", "version": "HTTP/1.1",
                           "host": "example.com", "keep_alive": True, "body": b""}),
    ("query", head("GET /a/b?x=1&y=%20 HTTP/1.1", H), {"path": "/a/b", "query": "x=1&y=%20"}),
    ("empty-query", head("GET /a? HTTP/1.1", H), {"path": "/a", "query": ""}),
    ("question-in-query", head("GET /a?b?c HTTP/1.1", H), {"path": "/a", "query": "b?c"}),
    ("percent-path", head("GET /a%2Fb HTTP/1.1", H), {"path": "/a%2Fb"}),
    ("vchar-target", head('GET /a|b{c}"d^`\\ HTTP/1.1', H), {"path": '/a|b{c}"d^`\\'}),
    ("http10-no-host", head("GET / HTTP/1.0"), {"version": "HTTP/1.0", "host": None, "keep_alive": False}),
    ("http10-keepalive", head("GET / HTTP/1.0", "Connection: keep-alive"), {"keep_alive": True}),
    ("http10-keepalive-case", head("GET / HTTP/1.0", "Connection: Keep-Alive"), {"keep_alive": True}),
    ("http11-close", head(GET, H, "Connection: close"), {"keep_alive": False}),
    ("http11-close-case", head(GET, H, "Connection: CLOSE"), {"keep_alive": False}),
    ("close-in-list", head(GET, H, "Connection: keep-alive, close"), {"keep_alive": False}),
    ("close-second-field", head(GET, H, "Connection: upgrade", "Connection: close"), {"keep_alive": False}),
    ("http11-keepalive-token", head(GET, H, "Connection: keep-alive"), {"keep_alive": True}),
    ("http10-close-wins", head("GET / HTTP/1.0", "Connection: keep-alive, close"), {"keep_alive": False}),
    ("closed-not-close", head(GET, H, "Connection: closed"), {"keep_alive": True}),
    ("one-leading-crlf", b"\r\n" + head(GET, H), {"method": "GET"}),
    ("four-leading-crlf", b"\r\n" * 4 + head(GET, H), {"method": "GET"}),
    ("custom-method", head("PURGE /x HTTP/1.1", H), {"method": "PURGE"}),
    ("method-with-dash", head("M-SEARCH * HTTP/1.1", H), 400),
    ("method-tchars", head("A!#$%&'*+-.^_`|~9 / HTTP/1.1", H), {"method": "A!#$%&'*+-.^_`|~9"}),
    ("lowercase-method-kept", head("get / HTTP/1.1", H), {"method": "get"}),
    ("options-asterisk", head("OPTIONS * HTTP/1.1", H), {"method": "OPTIONS", "path": "*"}),
    ("connect", head("CONNECT example.com:443 HTTP/1.1", "Host: example.com:443"),
     {"method": "CONNECT", "host": "example.com:443", "path": ""}),
    ("connect-ipv6", head("CONNECT [::1]:443 HTTP/1.1", "Host: [::1]:443"), {"host": "[::1]:443"}),
    ("absolute-form", head("GET http://example.org/p?q=1 HTTP/1.1", "Host: other"),
     {"path": "/p", "query": "q=1", "host": "example.org"}),
    ("absolute-no-path", head("GET http://example.org HTTP/1.1", "Host: other"),
     {"path": "/", "host": "example.org"}),
    ("absolute-port", head("GET https://example.org:8443/x HTTP/1.1", "Host: example.org:8443"),
     {"path": "/x", "host": "example.org:8443"}),
    ("absolute-query-only", head("GET http://e.org?a=b HTTP/1.1", H), {"path": "/", "query": "a=b"}),
    # --- valid fields
    ("headers-kept-in-order", head(GET, H, "Accept: */*", "X-A: 1"),
     {"headers": [("Host", "example.com"), ("Accept", "*/*"), ("X-A", "1")]}),
    ("ows-trimmed", head(GET, H, "X-A:   spaced  \t"), {"headers": [("Host", "example.com"), ("X-A", "spaced")]}),
    ("no-ows", head(GET, "Host:example.com", "X-A:v"), {"host": "example.com"}),
    ("tab-ows", head(GET, H, "X-A:\tv\t"), {"headers": [("Host", "example.com"), ("X-A", "v")]}),
    ("inner-spaces-kept", head(GET, H, "X-A: a  b\tc"), {"headers": [("Host", "example.com"), ("X-A", "a  b\tc")]}),
    ("empty-value", head(GET, H, "X-Empty:"), {"headers": [("Host", "example.com"), ("X-Empty", "")]}),
    ("empty-value-ows", head(GET, H, "X-Empty:   "), {"headers": [("Host", "example.com"), ("X-Empty", "")]}),
    ("obs-text-value", head(GET, H, "X-Name: caf\xe9"), {"headers": [("Host", "example.com"), ("X-Name", "caf\xe9")]}),
    ("utf8-value-bytes", head(GET, H) [:-2] + "X-U: \u00e2\u0082\u00ac\r\n\r\n".encode("latin-1"),
     {"headers": [("Host", "example.com"), ("X-U", "\u00e2\u0082\u00ac")]}),
    ("repeated-field", head(GET, H, "Cookie: a=1", "Cookie: b=2"),
     {"headers": [("Host", "example.com"), ("Cookie", "a=1"), ("Cookie", "b=2")]}),
    ("colon-in-value", head(GET, H, "X-T: a:b:c"), {"headers": [("Host", "example.com"), ("X-T", "a:b:c")]}),
    ("host-case", head(GET, "hOsT: x.org"), {"host": "x.org"}),
    ("host-port", head(GET, "Host: x.org:8080"), {"host": "x.org:8080"}),
    ("host-ipv6", head(GET, "Host: [::1]:8000"), {"host": "[::1]:8000"}),
    ("host-ipv4", head(GET, "Host: 10.0.0.1"), {"host": "10.0.0.1"}),
    ("host-empty", head(GET, "Host:"), {"host": ""}),
    ("host-pct", head(GET, "Host: ex%41mple"), {"host": "ex%41mple"}),
    ("expect-continue", head("PUT / HTTP/1.1", H, "Expect: 100-continue", "Content-Length: 0"),
     {"expect_continue": True}),
    ("expect-continue-case", head("PUT / HTTP/1.1", H, "Expect: 100-Continue"), {"expect_continue": True}),
    ("expect-in-http10-ignored", head("PUT / HTTP/1.0", "Expect: 100-continue"), {"expect_continue": False}),
    ("expect-other", head("PUT / HTTP/1.1", H, "Expect: something"), {"expect_continue": False}),
    ("underscore-dropped", head(GET, H, "X_Forwarded_For: evil", "X-Forwarded-For: good"),
     {"headers": [("Host", "example.com"), ("X-Forwarded-For", "good")]}),
    ("underscore-refused", head(GET, H, "X_Forwarded_For: evil"), 400, {"header_map": "refuse"}),
    ("underscore-dangerous", head(GET, H, "X_A: 1"),
     {"headers": [("Host", "example.com"), ("X_A", "1")]}, {"header_map": "dangerous"}),
    ("underscore-refuse-ok-without", head(GET, H, "X-A: 1"), {"method": "GET"}, {"header_map": "refuse"}),
    ("underscore-in-value-ok", head(GET, H, "X-A: a_b"), {"headers": [("Host", "example.com"), ("X-A", "a_b")]},
     {"header_map": "refuse"}),
    # --- Content-Length bodies
    ("post-body", head("POST / HTTP/1.1", H, "Content-Length: 5", body=b"hello"), {"body": b"hello"}),
    ("cl-zero", head("POST / HTTP/1.1", H, "Content-Length: 0"), {"body": b""}),
    ("cl-leading-zeros", head("POST / HTTP/1.1", H, "Content-Length: 005", body=b"hello"), {"body": b"hello"}),
    ("cl-ows", head("POST / HTTP/1.1", H, "Content-Length:  3 ", body=b"abc"), {"body": b"abc"}),
    ("cl-case", head("POST / HTTP/1.1", H, "content-LENGTH: 3", body=b"abc"), {"body": b"abc"}),
    ("cl-pipelined", head("POST / HTTP/1.1", H, "Content-Length: 3", body=b"abcGET /2 HTTP/1.1\r\n"),
     {"body": b"abc", "leftover": b"GET /2 HTTP/1.1\r\n"}),
    ("get-with-body", head(GET, H, "Content-Length: 2", body=b"hi"), {"body": b"hi"}),
    ("pipelined-gets", head(GET, H) + head("GET /2 HTTP/1.1", H),
     {"body": b"", "leftover": head("GET /2 HTTP/1.1", H)}),
    ("cl-short-body", head("POST / HTTP/1.1", H, "Content-Length: 10", body=b"short"), 400),
    ("cl-http10", head("POST / HTTP/1.0", "Content-Length: 2", body=b"ok"), {"body": b"ok"}),
    # --- chunked bodies
    ("chunked", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
     {"body": b"hello", "chunked": True}),
    ("chunked-several", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                             body=b"1\r\na\r\n2\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n"), {"body": b"abcdef"}),
    ("chunked-hex-upper", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                               body=b"A\r\n0123456789\r\n0\r\n\r\n"), {"body": b"0123456789"}),
    ("chunked-hex-lower", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                               body=b"a\r\n0123456789\r\n0\r\n\r\n"), {"body": b"0123456789"}),
    ("chunked-16-digits", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                               body=b"0000000000000003\r\nabc\r\n0\r\n\r\n"), {"body": b"abc"}),
    ("chunked-ext", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                         body=b"3;name=value\r\nabc\r\n0;last\r\n\r\n"), {"body": b"abc"}),
    ("chunked-ext-bws", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                             body=b"3 ; a = b ;c\r\nabc\r\n0\r\n\r\n"), {"body": b"abc"}),
    ("chunked-ext-quoted", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                body=b'3;a="x y;\\"z"\r\nabc\r\n0\r\n\r\n'), {"body": b"abc"}),
    ("chunked-trailer", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                             body=b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\n\r\n"),
     {"body": b"abc", "trailers": [("X-Checksum", "42")]}),
    ("chunked-case", head("POST / HTTP/1.1", H, "Transfer-Encoding: ChUnKeD", body=b"0\r\n\r\n"),
     {"chunked": True, "body": b""}),
    ("chunked-tab-ows", head("POST / HTTP/1.1", H, "Transfer-Encoding:\tchunked\t", body=b"0\r\n\r\n"),
     {"chunked": True}),
    ("chunked-empty", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
     {"body": b""}),
    ("chunked-pipelined", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                               body=b"2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n"),
     {"body": b"hi", "leftover": b"GET / HTTP/1.1\r\n"}),
    ("chunked-binary-data", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                 body=b"4\r\n\r\n\x00\n\r\n0\r\n\r\n"), {"body": b"\r\n\x00\n"}),
    ("underscore-te-dropped", head("POST / HTTP/1.1", H, "Transfer_Encoding: chunked", "Content-Length: 3",
                                   body=b"abc"), {"chunked": False, "body": b"abc"}),
    # --- incomplete heads ask for more
    ("empty", b"", MORE),
    ("partial-line", b"GET / HT", MORE),
    ("line-only", b"GET / HTTP/1.1\r\n", MORE),
    ("no-empty-line", b"GET / HTTP/1.1\r\nHost: x\r\n", MORE),
    ("half-terminator", b"GET / HTTP/1.1\r\nHost: x\r\n\r", MORE),
    ("only-crlf", b"\r\n", MORE),
    ("trailing-cr", b"GET / HTTP/1.1\r", MORE),
    # --- bad request lines: 400
    ("lowercase-version", head("GET / http/1.1", H), 400),
    ("trailing-space", head("GET / HTTP/1.1 ", H), 400),
    ("double-space", head("GET  / HTTP/1.1", H), 400),
    ("tab-separator", head("GET\t/ HTTP/1.1", H), 400),
    ("leading-space", head(" GET / HTTP/1.1", H), 400),
    ("http09", head("GET /"), 400),
    ("no-minor", head("GET / HTTP/1", H), 400),
    ("two-digit-minor", head("GET / HTTP/1.10", H), 400),
    ("two-digit-major", head("GET / HTTP/11.1", H), 400),
    ("version-letters", head("GET / HTTP/a.b", H), 400),
    ("missing-target", head("GET HTTP/1.1", H), 400),
    ("empty-method", head(" / HTTP/1.1", H), 400),
    ("method-paren", head("GE(T / HTTP/1.1", H), 400),
    ("method-slash", head("GE/T / HTTP/1.1", H), 400),
    ("method-nonascii", head("G\xc9T / HTTP/1.1", H), 400),
    ("target-space", head("GET /a b HTTP/1.1", H), 400),
    ("target-ctl", head("GET /a\x01b HTTP/1.1", H), 400),
    ("target-del", head("GET /a\x7fb HTTP/1.1", H), 400),
    ("target-nonascii", head("GET /caf\xe9 HTTP/1.1", H), 400),
    ("target-tab", head("GET /a\tb HTTP/1.1", H), 400),
    ("target-fragment", head("GET /a#frag HTTP/1.1", H), 400),
    ("target-relative", head("GET a/b HTTP/1.1", H), 400),
    ("asterisk-get", head("GET * HTTP/1.1", H), 400),
    ("authority-get", head("GET example.com:80 HTTP/1.1", H), 400),
    ("connect-origin", head("CONNECT / HTTP/1.1", H), 400),
    ("connect-no-port", head("CONNECT example.com HTTP/1.1", H), 400),
    ("absolute-userinfo", head("GET http://user@example.com/ HTTP/1.1", H), 400),
    ("absolute-bad-host", head("GET http://exa<mple.com/ HTTP/1.1", H), 400),
    ("nul-in-line", b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("bare-lf-line", b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    ("bare-cr-line", b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
    ("all-bare-lf", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("bare-lf-partial", b"GET / HTTP/1.1\n", 400),
    ("too-many-leading-crlf", b"\r\n" * 6 + head(GET, H), 400),
    ("tls-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    ("garbage-line-partial", b"hello there\r\n", 400),
    # --- versions: 505 for well-formed ones we do not speak
    ("http2", head("GET / HTTP/2.0", H), 505),
    ("http2-minor", head("GET / HTTP/2.1", H), 505),
    ("http09-versioned", head("GET / HTTP/0.9", H), 505),
    ("http3", head("GET / HTTP/3.0", H), 505),
    ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("http2-partial", b"GET / HTTP/2.0\r\n", 505),
    # --- a higher minor version of HTTP/1 is processed as HTTP/1.1 (RFC 9110 §2.5)
    ("http12", head("GET / HTTP/1.2", H), {"version": "HTTP/1.1", "keep_alive": True, "host": "example.com"}),
    ("http19", head("GET / HTTP/1.9", H), {"version": "HTTP/1.1", "keep_alive": True}),
    ("http12-close", head("GET / HTTP/1.2", H, "Connection: close"), {"keep_alive": False}),
    ("http12-needs-host", head("GET / HTTP/1.2"), 400),
    ("http12-chunked", head("POST / HTTP/1.2", H, "Transfer-Encoding: chunked", body=b"2\r\nhi\r\n0\r\n\r\n"),
     {"chunked": True, "body": b"hi"}),
    ("http12-cl-te", head("POST / HTTP/1.2", H, "Content-Length: 2", "Transfer-Encoding: chunked",
                          body=b"0\r\n\r\n"), 400),
    ("http12-expect", head("PUT / HTTP/1.2", H, "Expect: 100-continue", "Content-Length: 0"),
     {"expect_continue": True}),
    ("http12-partial", b"GET / HTTP/1.2\r\n", MORE),
    # --- bad fields: 400
    ("space-before-colon", head(GET, H, "X-A : v"), 400),
    ("tab-before-colon", head(GET, H, "X-A\t: v"), 400),
    ("space-before-colon-host", head(GET, "Host : x"), 400),
    ("obs-fold-sp", head(GET, H, "X-A: v", " continued"), 400),
    ("obs-fold-tab", head(GET, H, "X-A: v", "\tcontinued"), 400),
    ("first-field-folded", head(GET, " Host: x"), 400),
    ("nul-in-value", head(GET, H, "X-A: a\x00b"), 400),
    ("cr-in-value", head(GET, H, "X-A: a\rb"), 400),
    ("lf-in-value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n", 400),
    ("ctl-in-value", head(GET, H, "X-A: a\x01b"), 400),
    ("esc-in-value", head(GET, H, "X-A: \x1b[31m"), 400),
    ("del-in-value", head(GET, H, "X-A: a\x7fb"), 400),
    ("vt-in-value", head(GET, H, "X-A: a\x0bb"), 400),
    ("space-in-name", head(GET, H, "Bad Header: v"), 400),
    ("empty-name", head(GET, H, ": v"), 400),
    ("paren-in-name", head(GET, H, "X(A): v"), 400),
    ("slash-in-name", head(GET, H, "X/A: v"), 400),
    ("nonascii-name", head(GET, H, "X-\xe9: v"), 400),
    ("no-colon", head(GET, H, "NoColon"), 400),
    ("bare-lf-field", b"GET / HTTP/1.1\r\nHost: x\nX-A: v\r\n\r\n", 400),
    ("bare-lf-end", b"GET / HTTP/1.1\r\nHost: x\r\n\n", 400),
    ("cr-cr-lf", b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n", 400),
    ("missing-host", head(GET), 400),
    ("missing-host-other-fields", head(GET, "Accept: */*"), 400),
    ("two-hosts", head(GET, "Host: a", "Host: b"), 400),
    ("two-hosts-same", head(GET, "Host: a", "Host: a"), 400),
    ("two-hosts-case", head(GET, "Host: a", "HOST: a"), 400),
    ("two-hosts-http10", head("GET / HTTP/1.0", "Host: a", "Host: b"), 400),
    ("host-space", head(GET, "Host: a b"), 400),
    ("host-userinfo", head(GET, "Host: user@a"), 400),
    ("host-slash", head(GET, "Host: a/b"), 400),
    ("host-bad-port", head(GET, "Host: a:8x"), 400),
    ("host-comma", head(GET, "Host: a, b"), 400),
    # --- fields that may occur once (request.SINGLETON_FIELDS), and fields that may repeat
    ("two-content-types", head("POST / HTTP/1.1", H, "Content-Type: text/plain", "Content-Type: text/html"), 400),
    ("two-content-types-same", head("POST / HTTP/1.1", H, "Content-Type: a/b", "content-type: a/b"), 400),
    ("two-authorizations", head(GET, H, "Authorization: Basic YTpi", "Authorization: Bearer x"), 400),
    ("two-proxy-authorizations", head(GET, H, "Proxy-Authorization: a", "Proxy-Authorization: b"), 400),
    ("two-user-agents", head(GET, H, "User-Agent: a", "User-Agent: b"), 400),
    ("two-referers", head(GET, H, "Referer: /a", "REFERER: /b"), 400),
    ("two-ranges", head(GET, H, "Range: bytes=0-1", "Range: bytes=5-6"), 400),
    ("two-if-modified-since", head(GET, H, "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
                                   "If-Modified-Since: Sun, 06 Nov 1994 08:49:38 GMT"), 400),
    ("two-max-forwards", head("OPTIONS * HTTP/1.1", H, "Max-Forwards: 1", "Max-Forwards: 9"), 400),
    ("two-singletons-apart", head(GET, H, "Date: a", "Accept: */*", "X-A: 1", "Date: a"), 400),
    ("two-singletons-http10", head("GET / HTTP/1.0", "Content-Type: a/b", "Content-Type: a/b"), 400),
    ("singletons-once-each", head("POST / HTTP/1.1", H, "Content-Type: a/b", "Authorization: x", "User-Agent: u",
                                  "Referer: /r", "Range: bytes=0-1", "Content-Length: 0"), {"method": "POST"}),
    ("singleton-underscore-dropped", head(GET, H, "Content-Type: a/b", "Content_Type: c/d"),
     {"headers": [("Host", "example.com"), ("Content-Type", "a/b")]}),
    ("repeated-accept", head(GET, H, "Accept: a/b", "Accept: c/d"),
     {"headers": [("Host", "example.com"), ("Accept", "a/b"), ("Accept", "c/d")]}),
    ("repeated-x-forwarded-for", head(GET, H, "X-Forwarded-For: 1.2.3.4", "X-Forwarded-For: 5.6.7.8"),
     {"method": "GET"}),
    ("repeated-cache-control", head(GET, H, "Cache-Control: no-cache", "Cache-Control: max-age=0"),
     {"method": "GET"}),
    ("repeated-expect", head("PUT / HTTP/1.1", H, "Expect: 100-continue", "Expect: 100-continue"),
     {"expect_continue": True}),
    # --- Content-Length: 400 unless exactly one run of digits
    ("cl-twice-equal", head("POST / HTTP/1.1", H, "Content-Length: 3", "Content-Length: 3", body=b"abc"), 400),
    ("cl-twice-differ", head("POST / HTTP/1.1", H, "Content-Length: 3", "Content-Length: 4", body=b"abcd"), 400),
    ("cl-list", head("POST / HTTP/1.1", H, "Content-Length: 3, 3", body=b"abc"), 400),
    ("cl-negative", head("POST / HTTP/1.1", H, "Content-Length: -3"), 400),
    ("cl-plus", head("POST / HTTP/1.1", H, "Content-Length: +3", body=b"abc"), 400),
    ("cl-hex", head("POST / HTTP/1.1", H, "Content-Length: 0x3", body=b"abc"), 400),
    ("cl-decimal", head("POST / HTTP/1.1", H, "Content-Length: 3.0", body=b"abc"), 400),
    ("cl-word", head("POST / HTTP/1.1", H, "Content-Length: three"), 400),
    ("cl-empty", head("POST / HTTP/1.1", H, "Content-Length:"), 400),
    ("cl-blank", head("POST / HTTP/1.1", H, "Content-Length:   "), 400),
    ("cl-inner-space", head("POST / HTTP/1.1", H, "Content-Length: 1 2"), 400),
    ("cl-underscore-digits", head("POST / HTTP/1.1", H, "Content-Length: 1_0"), 400),
    ("cl-fullwidth", head("POST / HTTP/1.1", H, "Content-Length: \xef\xbc\x93"), 400),
    ("cl-19-digits", head("POST / HTTP/1.1", H, "Content-Length: 1000000000000000000"), 400),
    ("cl-18-digits-ok", head("POST / HTTP/1.1", H, "Content-Length: 000000000000000002", body=b"ok"),
     {"body": b"ok"}),
    # --- request smuggling: framing fields that disagree, or are disguised
    ("cl-te", head("POST / HTTP/1.1", H, "Content-Length: 6", "Transfer-Encoding: chunked",
                   body=b"0\r\n\r\nX"), 400),
    ("te-cl", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", "Content-Length: 3",
                   body=b"8\r\nSMUGGLED\r\n0\r\n\r\n"), 400),
    ("cl-te-obfuscated", head("POST / HTTP/1.1", H, "Content-Length: 4", "Transfer-Encoding: xchunked",
                              body=b"abcd"), 400),
    ("cl-te-identity", head("POST / HTTP/1.1", H, "Content-Length: 4", "Transfer-Encoding: identity",
                            body=b"abcd"), 400),
    ("te-xchunked", head("POST / HTTP/1.1", H, "Transfer-Encoding: xchunked"), 400),
    ("te-chunked-suffix", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunkedx"), 400),
    ("te-space-inside", head("POST / HTTP/1.1", H, "Transfer-Encoding: chun ked"), 400),
    ("te-quoted", head("POST / HTTP/1.1", H, 'Transfer-Encoding: "chunked"'), 400),
    ("te-param", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked;q=1.0", body=b"0\r\n\r\n"), 400),
    ("te-trailing-comma", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked,", body=b"0\r\n\r\n"), 400),
    ("te-leading-comma", head("POST / HTTP/1.1", H, "Transfer-Encoding: , chunked", body=b"0\r\n\r\n"), 400),
    ("te-empty", head("POST / HTTP/1.1", H, "Transfer-Encoding:"), 400),
    ("te-chunked-twice", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked, chunked",
                              body=b"0\r\n\r\n"), 400),
    ("te-two-fields-chunked", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                   "Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400),
    ("te-chunked-then-other", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                   "Transfer-Encoding: x"), 400),
    ("te-not-last", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked, gzip"), 400),
    ("te-gzip-only", head("POST / HTTP/1.1", H, "Transfer-Encoding: gzip"), 400),
    ("te-identity-only", head("POST / HTTP/1.1", H, "Transfer-Encoding: identity"), 400),
    ("te-gzip-chunked", head("POST / HTTP/1.1", H, "Transfer-Encoding: gzip, chunked"), 501),
    ("te-gzip-then-chunked-fields", head("POST / HTTP/1.1", H, "Transfer-Encoding: gzip",
                                         "Transfer-Encoding: chunked"), 501),
    ("te-unknown-chunked", head("POST / HTTP/1.1", H, "Transfer-Encoding: x-custom, chunked"), 501),
    ("te-bad-token-chunked", head("POST / HTTP/1.1", H, "Transfer-Encoding: a b, chunked"), 400),
    ("te-http10", head("POST / HTTP/1.0", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400),
    ("te-http10-with-cl", head("POST / HTTP/1.0", "Transfer-Encoding: chunked", "Content-Length: 5",
                               body=b"0\r\n\r\n"), 400),
    ("te-space-before-colon", head("POST / HTTP/1.1", H, "Transfer-Encoding : chunked",
                                   "Content-Length: 5", body=b"0\r\n\r\n"), 400),
    ("te-folded", head("POST / HTTP/1.1", H, "Transfer-Encoding:", " chunked"), 400),
    ("te-vt", head("POST / HTTP/1.1", H, "Transfer-Encoding:\x0bchunked"), 400),
    ("te-ff", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked\x0c"), 400),
    ("te-nul", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked\x00"), 400),
    ("te-cr", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked\r"), 400),
    ("te-leading-space-line", head("POST / HTTP/1.1", H, " Transfer-Encoding: chunked"), 400),
    ("te-nonascii", head("POST / HTTP/1.1", H, "Transfer-Encoding: ch\xfcnked"), 400),
    ("cl-te-both-junk", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n"
                        b"\r\n5\r\nGET /\r\n0\r\n\r\n", 400),
    # --- chunked framing errors
    ("chunk-0x", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"0x3\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-plus", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"+3\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-minus", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"-3\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-leading-space", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                 body=b" 3\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-trailing-space", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                  body=b"3 \r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-trailing-tab", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                body=b"3\t\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-empty-size", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-17-digits", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                             body=b"00000000000000003\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-not-hex", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"g\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-underscore", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                              body=b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n"), 400),
    ("chunk-ext-bare-cr", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                               body=b"3;a\rb\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-ext-bare-lf", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                               body=b"3;a\nb\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-ext-quoted-cr", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                 body=b'3;a="x\ry"\r\nabc\r\n0\r\n\r\n'), 400),
    ("chunk-ext-empty", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"3;\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-ext-no-name", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                               body=b"3;=x\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-ext-no-value", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                body=b"3;a=\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-ext-unclosed-quote", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                      body=b'3;a="x\r\nabc\r\n0\r\n\r\n'), 400),
    ("chunk-ext-nul", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                           body=b"3;a=\x00\r\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-lf-only-size", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"3\nabc\r\n0\r\n\r\n"), 400),
    ("chunk-data-too-long", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                 body=b"3\r\nabcd\r\n0\r\n\r\n"), 400),
    ("chunk-data-lf-only", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                body=b"3\r\nabc\n0\r\n\r\n"), 400),
    ("chunk-data-no-crlf", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                body=b"3\r\nabc0\r\n\r\n"), 400),
    ("chunk-line-too-long", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                 body=b"3;" + b"a" * (MAX_CHUNK_LINE + 10)), 400),
    ("last-chunk-lf", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"0\r\n\n"), 400),
    ("last-chunk-bare-lf-end", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                    body=b"0\r\nX: y\n\r\n"), 400),
    # --- chunked bodies cut short anywhere: never a silently complete body
    ("cut-in-size", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"3"), 400),
    ("cut-after-size", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"3\r\n"), 400),
    ("cut-in-data", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"3\r\nab"), 400),
    ("cut-after-data", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"3\r\nabc"), 400),
    ("cut-after-data-cr", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"3\r\nabc\r"), 400),
    ("cut-before-last", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"3\r\nabc\r\n"), 400),
    ("cut-after-last-chunk", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"0\r\n"), 400),
    ("cut-before-final-lf", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"0\r\n\r"), 400),
    ("cut-in-trailer", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked", body=b"0\r\nX-A: 1\r\n"), 400),
    ("cut-no-body", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked"), 400),
    # --- trailers
    ("trailer-content-length", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                    body=b"0\r\nContent-Length: 5\r\n\r\n"), 400),
    ("trailer-transfer-encoding", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                       body=b"0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400),
    ("trailer-host", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                          body=b"0\r\nHost: evil\r\n\r\n"), 400),
    ("trailer-authorization", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                   body=b"0\r\nAuthorization: x\r\n\r\n"), 400),
    ("trailer-case", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                          body=b"0\r\ncontent-LENGTH: 5\r\n\r\n"), 400),
    ("trailer-folded", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                            body=b"0\r\nX-A: 1\r\n 2\r\n\r\n"), 400),
    ("trailer-space-colon", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                 body=b"0\r\nX-A : 1\r\n\r\n"), 400),
    ("trailer-at-size", head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                             body=b"0\r\nX-Trailer: 12345678901234567\r\n\r\n"), {"body": b""}, {"field_size": 30}),
    ("trailer-over-size", head("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked",
                               body=b"0\r\nX-Trailer: 123456789012345678\r\n\r\n"), 431, {"field_size": 30}),
    ("trailer-two", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                         body=b"0\r\nX-A: 1\r\nX-B: 2\r\n\r\n"), {"trailers": [("X-A", "1"), ("X-B", "2")]}),
    # --- limits: 414, 431, 413
    ("line-at-limit", head("GET /" + "a" * (8190 - 14) + " HTTP/1.1", H), {"method": "GET"}),
    ("line-over-limit", head("GET /" + "a" * (8191 - 14) + " HTTP/1.1", H), 414),
    ("line-over-limit-partial", b"GET /" + b"a" * 9000, 414),
    ("line-long-query-default", head("GET /" + LONG + " HTTP/1.1", H), {"method": "GET"}),
    ("line-gunicorn-default", head("GET /" + LONG + " HTTP/1.1", H), 414, {"request_line": 4094}),
    ("line-limit-above-8190", head("GET /" + "b" * 20000 + " HTTP/1.1", H), {"method": "GET"},
     {"request_line": 32768}),
    ("line-unlimited", head("GET /" + "c" * 50000 + " HTTP/1.1", H), {"method": "GET"}, {"request_line": 0}),
    ("line-small-limit", head("GET /abcdef HTTP/1.1", H), 414, {"request_line": 10}),
    ("fields-at-limit", head(GET, H, *[f"X-{i}: v" for i in range(99)]), {"method": "GET"}),
    ("fields-over-limit", head(GET, H, *[f"X-{i}: v" for i in range(100)]), 431),
    ("fields-unlimited", head(GET, H, *[f"X-{i}: v" for i in range(500)]), {"method": "GET"}, {"fields": 0}),
    ("fields-small-limit", head(GET, H, "A: 1", "B: 2"), 431, {"fields": 2}),
    # a field line counts as received, with its CRLF (as in Gunicorn)
    ("field-at-size", head(GET, H, "X-Big: " + "v" * (8188 - 7)), {"method": "GET"}),
    ("field-over-size", head(GET, H, "X-Big: " + "v" * (8189 - 7)), 431),
    ("field-over-size-by-ows", head(GET, H, "X-Big:" + " " * 9 + "v" * 8180), 431),
    ("field-exact-small", head(GET, "Host: a", "X-A: 123456"), {"method": "GET"}, {"field_size": 13}),
    ("field-over-small", head(GET, "Host: a", "X-A: 123456"), 431, {"field_size": 12}),
    ("field-ows-counted", head(GET, "Host: a", "X-A:      1    "), 431, {"field_size": 16}),
    ("field-size-unlimited", head(GET, H, "X-Big: " + "v" * 20000), {"method": "GET"}, {"field_size": 0}),
    ("field-small-size", head(GET, H, "X-A: 123456"), 431, {"field_size": 8}),
    ("head-too-large-partial", b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200000, 431),
    ("body-at-limit", head("POST / HTTP/1.1", H, "Content-Length: 10", body=b"x" * 10), {"body": b"x" * 10},
     {"body": 10}),
    ("body-over-limit", head("POST / HTTP/1.1", H, "Content-Length: 11", body=b"x" * 11), 413, {"body": 10}),
    ("body-huge-cl", head("POST / HTTP/1.1", H, "Content-Length: 99999999999"), 413, {"body": 1000}),
    ("chunked-at-limit", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                              body=b"5\r\nabcde\r\n5\r\nfghij\r\n0\r\n\r\n"), {"body": b"abcdefghij"}, {"body": 10}),
    ("chunked-over-limit", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                                body=b"5\r\nabcde\r\n6\r\nfghijk\r\n0\r\n\r\n"), 413, {"body": 10}),
    ("chunked-huge-size", head("POST / HTTP/1.1", H, "Transfer-Encoding: chunked",
                               body=b"ffffffffffffffff\r\n"), 413, {"body": 1 << 20}),
]


def _cases():
    for case in CASES:
        name, raw, expected = case[:3]
        limits = case[3] if len(case) > 3 else {}
        yield pytest.param(name, raw, expected, limits, id=name)


def test_there_are_enough_cases():
    assert len(CASES) >= 150
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("name, raw, expected, limits", list(_cases()))
def test_parse(parse, name, raw, expected, limits):
    if parse is llhttp_parse_head and name in LLHTTP_STRICTER:
        expected = 400
    result = outcome(raw, Limits(**limits), parse)
    if isinstance(expected, dict):
        assert isinstance(result, dict), f"expected a request, got {result!r}"
        assert {key: result[key] for key in expected} == expected
    else:
        assert result == expected


def test_limits_reject_bad_header_map():
    with pytest.raises(ValueError):
        Limits(header_map="maybe")


def test_llhttp_stricter_cases_exist():
    assert LLHTTP_STRICTER <= {case[0] for case in CASES}


@pytest.mark.parametrize("parse", PARSERS)
def test_head_is_bounded_when_every_limit_is_off(parse):
    limits = Limits(request_line=0, fields=0, field_size=0)
    assert limits.max_head < 4 << 20
    with pytest.raises(HTTPError) as info:
        parse(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 400000, limits)
    assert info.value.status == 431


# A value each singleton field may carry once; the parser checks only Host
# and Content-Length values, the others just need to be field values.
SINGLETON_VALUE = {"host": "example.com", "content-length": "0"}


def _with_field(name, times):
    fields = [f"{name.title()}: {SINGLETON_VALUE.get(name, 'v')}"] * times
    return head("POST / HTTP/1.1", *([] if name == "host" else [H]), *fields)


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("name", sorted(SINGLETON_FIELDS))
def test_every_singleton_field_may_occur_once_not_twice(parse, name):
    assert isinstance(outcome(_with_field(name, 1), parse=parse), dict)
    with pytest.raises(HTTPError) as info:
        parse(_with_field(name, 2), Limits())
    assert info.value.status == 400
    assert f"more than one {name}" in info.value.detail.lower()


def test_singleton_fields_cite_their_section():
    assert {"host", "content-length", "content-type", "authorization"} <= set(SINGLETON_FIELDS)
    for name, section in SINGLETON_FIELDS.items():
        assert name == name.lower() and section.startswith("RFC 9110 §"), name


@pytest.mark.parametrize("raw", [
    head("POST / HTTP/1.1", H, "Content-Length: 3", "Content-Length: 3", body=b"abc"),
    head(GET, H, "Authorization: a", "Authorization: a"),
    head(GET, H, "X-Big: " + "v" * 8182),
    head("GET / HTTP/1.2", H),
])
def test_both_parsers_decide_alike(raw):
    if llhttp_parse_head is None:
        pytest.skip("httptools is not installed")
    results = []
    for parse in (parse_head, llhttp_parse_head):
        try:
            req, _ = parse(raw, Limits())
            results.append((req.version, req.keep_alive))
        except HTTPError as exc:
            results.append((exc.status, exc.detail))
    assert results[0] == results[1]
