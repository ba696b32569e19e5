"""The Flask tutorial app, with a few routes to try prefork with.

    prefork examples.hello_flask:app -w 4 -b 127.0.0.1:8000
"""

import os
import time

from flask import Flask, request

app = Flask(__name__)


@app.route("/")
def hello_world():
    return "Hello, World!"


@app.route("/echo", methods=["POST", "PUT"])
def echo():
    """Send back the request body."""
    return request.get_data(), 200, {"Content-Type": request.content_type or "application/octet-stream"}


@app.route("/sleep")
def sleep():
    """Sleep for ?s=N seconds (a slow request)."""
    seconds = float(request.args.get("s", "1"))
    time.sleep(seconds)
    return f"slept {seconds}\n"


@app.route("/error")
def error():
    """Raise an exception (the server answers 500 and keeps serving)."""
    raise RuntimeError("this route always fails")


@app.route("/pid")
def pid():
    """The pid of the worker that served this request."""
    return str(os.getpid())
