"""An app for the observability tests: metrics, request ids, the control socket."""

import os
import time


def app(environ, start_response):
    """?status=N answers N; ?sleep=S sleeps first; ?header=VALUE sets its own
    X-Request-ID; ?exit=N ends the worker with that status. The body is the
    request id prefork gave the request (or "-"), then the worker's pid."""
    query = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
    if "sleep" in query:
        time.sleep(float(query["sleep"]))
    if "exit" in query:
        os._exit(int(query["exit"]))
    headers = [("Content-Type", "text/plain")]
    if "header" in query:
        headers.append(("X-Request-ID", query["header"]))
    if "read" in query:
        environ["wsgi.input"].read()
    body = f"{environ.get('prefork.request_id', '-')} {os.getpid()}".encode()
    start_response(f"{query.get('status', '200')} Whatever", headers)
    return [body]
