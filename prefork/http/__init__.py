"""The sans-IO HTTP/1.1 protocol layer: bytes in, events and bytes out.

Nothing in this package touches a socket, a settings object or a logger.
"""

from __future__ import annotations

from collections.abc import Callable

from .body import ChunkedBody, LengthBody
from .errors import HTTPError
from .request import Limits, Request, parse_head

__all__ = [
    "ChunkedBody", "HTTPError", "HeadParser", "LengthBody", "Limits", "Request", "head_parser",
    "parse_head",
]

# What every head parser is: ``request.parse_head``'s contract.
HeadParser = Callable[[bytes | bytearray, Limits], "tuple[Request, int] | None"]


def head_parser(name: str) -> HeadParser:
    """The head parser called ``name``: ``python`` (``request.parse_head``) or
    ``httptools`` (``llhttp.parse_head``, which needs httptools installed)."""
    if name == "python":
        return parse_head
    if name == "httptools":
        from .llhttp import parse_head as llhttp_parse_head

        return llhttp_parse_head
    raise ValueError(f"unknown head parser {name!r}")
