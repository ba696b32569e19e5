# The HTTP/1.1 grammar, transcribed from the ABNF of RFC 9110 and RFC 9112
# into compiled regular expressions. Strategy: a request head is decoded once
# as latin-1 (every byte maps to one code point, so nothing is lost and the
# patterns stay byte-exact), the request line is matched by one pattern and the
# whole header block is validated by a single ``fullmatch`` before one
# ``findall`` extracts the fields. Python never loops over characters; the
# only Python-level loop is over the (few) extracted fields.
from __future__ import annotations

import re

# RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-"
#                          / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
# RFC 9110 §5.6.2: token = 1*tchar
TOKEN = TCHAR + "+"
# RFC 9110 §5.6.1: OWS = *( SP / HTAB )
OWS = r"[ \t]*"
TOKEN_RE = re.compile(TOKEN)
# RFC 9110 §5.5: field-vchar = VCHAR / obs-text ; field values may also hold SP
# and HTAB between visible characters. CR, LF, NUL and other controls are out.
FIELD_VALUE_CHARS = r"[\t\x20-\x7e\x80-\xff]"

# RFC 9112 §3: request-line = method SP request-target SP HTTP-version
# RFC 9110 §9.1: method = token
# RFC 9112 §3.2: request-target; we accept any run of visible ASCII (VCHAR),
#   which excludes spaces, controls and non-ASCII bytes, and classify the form
#   separately (origin, absolute, authority, asterisk).
# RFC 9112 §2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT
REQUEST_LINE = re.compile(r"(" + TOKEN + r") ([!-~]+) HTTP/([0-9])\.([0-9])")

# RFC 9112 §5: field-line = field-name ":" OWS field-value OWS
# RFC 9110 §5.1: field-name = token
# The value group is lazy so that trailing OWS is not part of the value.
FIELD_LINE = r"(" + TOKEN + r"):" + OWS + r"(" + FIELD_VALUE_CHARS + r"*?)" + OWS + r"\r\n"
FIELD_LINES = re.compile(FIELD_LINE)

# One pass over a whole block of field lines, each ending in CRLF. A line that
# starts with SP/HTAB (obs-fold, RFC 9112 §5.2), whitespace before the colon
# (RFC 9112 §5.1), a bare LF or a control byte makes the whole block fail.
FIELD_BLOCK = re.compile(r"(?:" + TOKEN + r":" + FIELD_VALUE_CHARS + r"*\r\n)*")

# RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
#   chunk-size = 1*HEXDIG   (we cap it at 16 digits: 2**64 - 1)
# RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name
#                                  [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-val = token / quoted-string
# RFC 9110 §5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
QUOTED_STRING = r'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t !-~\x80-\xff])*"'
CHUNK_EXT = (
    r"(?:" + OWS + ";" + OWS + TOKEN + r"(?:" + OWS + "=" + OWS
    + r"(?:" + TOKEN + "|" + QUOTED_STRING + r"))?)*"
)
CHUNK_SIZE_LINE = re.compile(r"([0-9A-Fa-f]{1,16})" + CHUNK_EXT)

# RFC 9110 §7.2: Host = uri-host [ ":" port ]; we check only that the value is
# free of characters that cannot appear in an authority.
HOST_VALUE = re.compile(r"[!$&'()*+,\-.0-9:;=A-Z\[\]_a-z~%]*")

# RFC 9110 §8.6: Content-Length = 1*DIGIT
DIGITS = re.compile(r"[0-9]+")

# RFC 9112 §3.2.2: absolute-form = absolute-URI (scheme "://" ...)
ABSOLUTE_FORM = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*)://([^/?#]*)([^?#]*)(?:\?([^#]*))?")
# RFC 9112 §3.2.3: authority-form = uri-host ":" port
AUTHORITY_FORM = re.compile(r"[^/?#@\s]+:[0-9]+")

# Diagnostics for a header block that failed FIELD_BLOCK (error path only).
OBS_FOLD = re.compile(r"\r\n[ \t]")
SPACE_BEFORE_COLON = re.compile(r"(?:^|\r\n)" + TOKEN + r"[ \t]+:")
BARE_LF = re.compile(r"(?<!\r)\n")
