"""An application whose import takes PREFORK_TEST_BOOT_SECONDS seconds."""

import os
import time

time.sleep(float(os.environ.get("PREFORK_TEST_BOOT_SECONDS", "3")))


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"booted"]
