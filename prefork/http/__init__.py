"""The sans-IO HTTP/1.1 protocol layer: bytes in, events and bytes out.

Nothing in this package touches a socket, a settings object or a logger.
"""

from .body import ChunkedBody, LengthBody
from .errors import HTTPError
from .request import Limits, Request, parse_head

__all__ = ["ChunkedBody", "HTTPError", "LengthBody", "Limits", "Request", "parse_head"]
