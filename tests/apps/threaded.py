"""An app for the gthread tests: requests that wait (as on a database), and
what the worker tells the application about itself."""

import asyncio
import json
import os
import threading
import time


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    started = time.time()
    if path == "/sleep":
        mark = environ.get("HTTP_X_STARTED_MARK")
        if mark:  # tells the test that the request is in the application
            open(mark, "w").close()
        time.sleep(float(query or "0.1"))
    if path == "/stuck":
        stuck_here(float(query or "60"))
    if path == "/spin":  # CPU for this many milliseconds
        until = time.perf_counter() + float(query or "0.5") / 1000
        while time.perf_counter() < until:
            pass
    if path == "/cancel":  # a BaseException that is not SystemExit
        raise asyncio.CancelledError("the application's own")
    body = json.dumps({
        "pid": os.getpid(), "thread": threading.get_ident(), "start": started, "end": time.time(),
        "multithread": environ["wsgi.multithread"],
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def stuck_here(seconds):
    time.sleep(seconds)  # the stack in the timeout report must show this function
