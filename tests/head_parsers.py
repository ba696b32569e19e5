"""The head parsers the protocol tests run against: prefork's pure-Python
``parse_head`` and, when httptools is installed, the llhttp-backed one. Both
must pass the same table; the only differences allowed are listed here."""

import pytest

from prefork.http.request import parse_head as python_parse_head

try:
    from prefork.http.llhttp import parse_head as llhttp_parse_head
except ImportError:  # httptools is an optional extra
    llhttp_parse_head = None

PARSERS = [
    pytest.param(python_parse_head, id="python"),
    pytest.param(llhttp_parse_head, id="httptools", marks=pytest.mark.skipif(
        llhttp_parse_head is None, reason="httptools is not installed")),
]

# Table cases the pure-Python parser accepts and llhttp refuses: with
# httptools they are answered 400 (stricter is safe). Keep docs/http.md in step.
LLHTTP_STRICTER = {
    # llhttp's Transfer-Encoding check allows trailing spaces after "chunked"
    # but not a trailing HTAB, which RFC 9110 §5.6.1.1 makes valid OWS.
    "chunked-tab-ows",
}
# The detail of the 400 the httptools parser answers for those.
LLHTTP_REFUSED = "header section refused by llhttp"
