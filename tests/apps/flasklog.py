"""A Flask app that logs through Flask's default handler (which writes to wsgi.errors)."""

from flask import Flask

app = Flask(__name__)


@app.route("/log")
def log():
    app.logger.error("flask says %s", "hello")
    return "logged"


@app.route("/boom")
def boom():
    raise RuntimeError("flask boom")
