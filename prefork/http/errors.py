# Every protocol failure is one exception type carrying the status to answer
# with. The worker catches ``HTTPError``, sends ``status`` with a short body and
# closes the connection; it never needs to know which rule was broken.
from __future__ import annotations


class HTTPError(Exception):
    """A request that cannot be served; ``status`` is what to answer with."""

    status = 400
    reason = "Bad Request"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason


class BadRequest(HTTPError):
    status = 400
    reason = "Bad Request"


class PayloadTooLarge(HTTPError):
    status = 413
    reason = "Content Too Large"


class URITooLong(HTTPError):
    status = 414
    reason = "URI Too Long"


class HeaderFieldsTooLarge(HTTPError):
    status = 431
    reason = "Request Header Fields Too Large"


class NotImplementedCoding(HTTPError):
    status = 501
    reason = "Not Implemented"


class VersionNotSupported(HTTPError):
    status = 505
    reason = "HTTP Version Not Supported"


class IncompleteBody(BadRequest):
    """The peer closed the connection before the body was complete."""


class RequestTimeout(HTTPError):
    status = 408
    reason = "Request Timeout"
