# The HTTP/1.1 grammar, transcribed from the ABNF of RFC 9110 and RFC 9112
# into compiled regular expressions. Strategy: a request head is decoded once
# as latin-1 (every byte maps to one code point, so nothing is lost and the
# patterns stay byte-exact); the request line is matched by one pattern and
# the whole header block is validated by a single ``fullmatch``. Fields are
# then cut out of the valid block with ``str.split``/``partition`` (measured
# faster than a ``findall`` with a lazy value group). Python never loops over
# characters; the only Python-level loop is over the (few) fields. Chunked-body
# patterns are compiled for bytes, so chunk-size lines are never decoded.
from __future__ import annotations

import re

# RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-"
#                          / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
# RFC 9110 §5.6.2: token = 1*tchar
TOKEN = TCHAR + "+"
TOKEN_RE = re.compile(TOKEN)
# RFC 9110 §5.6.1.1: OWS = *( SP / HTAB )   (BWS has the same syntax)
OWS = r"[ \t]*"
# RFC 9110 §5.5: field-value = *field-content; field-content is field-vchar
#   [ 1*( SP / HTAB / field-vchar ) field-vchar ]; field-vchar = VCHAR / obs-text.
# So a value holds SP, HTAB, VCHAR and obs-text (0x80-0xFF) only: CR, LF, NUL
# and every other control byte (and DEL) make the field invalid.
FIELD_VALUE_CHARS = r"[\t\x20-\x7e\x80-\xff]"

# RFC 9112 §3: request-line = method SP request-target SP HTTP-version CRLF
# RFC 9110 §9.1: method = token
# RFC 9112 §3.2: request-target. We accept any run of visible ASCII (VCHAR),
#   which excludes spaces, controls and non-ASCII bytes, and classify the form
#   (origin, absolute, authority, asterisk) separately in request.py.
# RFC 9112 §2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT ; HTTP-name is
#   case-sensitive. Exactly one SP separates the parts (§3: no other whitespace).
REQUEST_LINE = re.compile(r"(" + TOKEN + r") ([!-~]+) HTTP/([0-9])\.([0-9])\r\n")

# RFC 9112 §5: field-line = field-name ":" OWS field-value OWS
# RFC 9110 §5.1: field-name = token
# One pass over a whole block of field lines, each ending in CRLF. The value
# may end in OWS; it is stripped when the fields are cut out. A line that
# starts with SP/HTAB (obs-fold, RFC 9112 §5.2), whitespace between name and
# colon (RFC 9112 §5.1), a bare CR or LF (RFC 9112 §2.2) or any control byte in
# a value (RFC 9110 §5.5) makes the whole block fail.
FIELD_BLOCK = re.compile(r"(?:" + TOKEN + r":" + FIELD_VALUE_CHARS + r"*\r\n)*")

# RFC 9110 §7.2: Host = uri-host [ ":" port ]  (RFC 3986 §3.2.2, §3.2.3)
#   uri-host = IP-literal / IPv4address / reg-name
#   reg-name = *( unreserved / pct-encoded / sub-delims ) ; port = *DIGIT
# userinfo ("user@") is not part of Host, so "@" is out.
UNRESERVED_SUBDELIMS = r"A-Za-z0-9\-._~!$&'()*+,;="
HOST_VALUE = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[" + UNRESERVED_SUBDELIMS + r":]+\]"
    r"|(?:[" + UNRESERVED_SUBDELIMS + r"]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?"
)

# RFC 9110 §8.6: Content-Length = 1*DIGIT. More than 18 digits could not be a
# real length and overflows 64-bit parsers elsewhere on the path.
CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")

# RFC 9112 §3.2.1: origin-form = absolute-path [ "?" query ]; "#" (a fragment)
#   is never part of a request-target.
# RFC 9112 §3.2.2: absolute-form = absolute-URI = scheme ":" hier-part [ "?" query ]
#   with hier-part "//" authority path-abempty for the http(s) schemes.
ABSOLUTE_FORM = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*)://([^/?#]*)(/[^?#]*)?(?:\?([^#]*))?")
# RFC 9112 §3.2.3: authority-form = uri-host ":" port
AUTHORITY_FORM = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|(?:[" + UNRESERVED_SUBDELIMS + r"]|%[0-9A-Fa-f]{2})+):[0-9]+"
)

# RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
#   chunk-size = 1*HEXDIG   (we allow at most 16 digits: 2**64 - 1)
# RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name
#                                  [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-name = token ; chunk-ext-val = token / quoted-string
# RFC 9110 §5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
#   qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
#   quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
# No sign, no leading or trailing whitespace around the size, no CR or LF
# inside an extension: the line is matched as a whole, without its CRLF.
QUOTED_STRING = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t !-~\x80-\xff])*"'
CHUNK_EXT = (
    r"(?:" + OWS + ";" + OWS + TOKEN + r"(?:" + OWS + "=" + OWS
    + r"(?:" + TOKEN + "|" + QUOTED_STRING + r"))?)*"
)
CHUNK_SIZE_LINE = re.compile((r"([0-9A-Fa-f]{1,16})" + CHUNK_EXT).encode("latin-1"))

# Diagnostics for a header block that failed FIELD_BLOCK (error path only).
OBS_FOLD = re.compile(r"\r\n[ \t]")
SPACE_BEFORE_COLON = re.compile(r"(?:^|\r\n)" + TOKEN + r"[ \t]+:")
# A LF not preceded by CR, a CR not followed by LF (RFC 9112 §2.2), or NUL:
# never valid anywhere in a head, so an incomplete head holding one is
# rejected at once instead of waiting for a terminator.
BAD_LINE_BYTES = re.compile(rb"(?<!\r)\n|\r(?=[^\n])|\x00")
