"""Apps for the logging tests."""

import logging
import os
import sys
import time


def app(environ, start_response):
    """Answers with its pid; ?sleep=S sleeps first; ?print=TEXT prints TEXT to
    stdout and stderr; ?errors=TEXT writes TEXT to wsgi.errors; ?audit=TEXT logs
    TEXT to the application's own logger "app.audit"."""
    query = dict(p.split("=", 1) for p in environ["QUERY_STRING"].split("&") if "=" in p)
    if "sleep" in query:
        time.sleep(float(query["sleep"]))
    if "print" in query:
        print("stdout:" + query["print"])
        print("stderr:" + query["print"], file=sys.stderr)
    if "audit" in query:
        logging.getLogger("app.audit").warning("audit:%s", query["audit"])
    if "errors" in query:
        environ["wsgi.errors"].write("errors:" + query["errors"] + "\n")
    body = str(os.getpid()).encode()
    status = query.get("status", "200")
    start_response(f"{status} Whatever", [
        ("Content-Type", "text/plain"), ("X-App", 'say "hi"'), ("Content-Length", str(len(body))),
    ])
    return [body]
