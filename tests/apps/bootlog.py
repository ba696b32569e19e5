"""An application whose import uses the CPU for PREFORK_TEST_BOOT_SECONDS and
appends "pid start end" (time.monotonic) to PREFORK_TEST_BOOT_LOG."""

import os
import time

_started = time.monotonic()
_until = _started + float(os.environ.get("PREFORK_TEST_BOOT_SECONDS", "0.2"))
while time.monotonic() < _until:
    pass
with open(os.environ["PREFORK_TEST_BOOT_LOG"], "a") as _log:
    _log.write(f"{os.getpid()} {_started} {time.monotonic()}\n")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"booted"]
