# The worker classes, by the name ``--worker-class`` (``-k``) takes. Each entry
# is a dotted path imported only when a worker of that class is made, so the
# names can be checked (and listed in messages) without importing any worker.
# A new worker class is one line in WORKER_CLASSES.
#
# Every other value is refused with a one-line message that says what to use
# instead: Gunicorn's async workers map to threads, ASGI workers and any other
# class path cannot serve here because prefork runs WSGI applications.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..settings import Config, ConfigError

if TYPE_CHECKING:
    from .base import Worker

WORKER_CLASSES: dict[str, str] = {
    "sync": "prefork.workers.sync:SyncWorker",
    "gthread": "prefork.workers.gthread:GThreadWorker",
}

# Gunicorn's own class paths and aliases, by the short name they stand for.
_GUNICORN_PATHS = {
    "gunicorn.workers.sync.SyncWorker": "sync",
    "gunicorn.workers.gthread.ThreadWorker": "gthread",
    "gunicorn.workers.ggevent.GeventWorker": "gevent",
    "gunicorn.workers.ggevent.GeventPyWSGIWorker": "gevent",
    "gunicorn.workers.geventlet.EventletWorker": "eventlet",
    "gunicorn.workers.gtornado.TornadoWorker": "tornado",
}
_ASYNC = {"gevent", "gevent_wsgi", "gevent_pywsgi", "eventlet", "tornado"}
_ASGI_HINTS = ("asgi", "uvicorn", "hypercorn", "daphne", "granian")


class UnknownWorkerClass(ValueError):
    """A worker class prefork does not have; the message says what to use instead."""


def worker_class(name: str) -> type[Worker]:
    """The class registered as ``name``; ``UnknownWorkerClass`` for any other value."""
    path = WORKER_CLASSES.get(name)
    if path is None:
        raise UnknownWorkerClass(refusal(name))
    module, _, attr = path.partition(":")
    cls: type[Worker] = getattr(importlib.import_module(module), attr)
    return cls


def check_settings(cfg: Config) -> None:
    """``ConfigError`` (a settings error: exit 2) naming where a bad worker class was set."""
    if cfg.worker_class not in WORKER_CLASSES:
        raise ConfigError(f"{cfg.where('worker_class')}: {refusal(cfg.worker_class)}")


def _choices() -> str:
    return " or ".join(f"-k {name}" for name in WORKER_CLASSES)


def refusal(value: str) -> str:
    """Why ``value`` cannot be a worker class here, and what to use instead."""
    name = value.strip()
    short = _GUNICORN_PATHS.get(name, name.removeprefix("egg:gunicorn#"))
    if short in WORKER_CLASSES:
        return f"{value!r} is Gunicorn's name for a worker class; use -k {short}"
    if short in _ASYNC:
        return (f"{value!r} is an async worker class, which prefork does not have; "
                "use -k gthread (a thread per request) instead")
    if any(hint in name.lower() for hint in _ASGI_HINTS):
        return (f"{value!r} is an ASGI worker class: prefork serves WSGI applications; "
                f"use {_choices()} with a WSGI application, or an ASGI server for an ASGI one")
    if "." in name or ":" in name:
        return (f"{value!r}: prefork serves WSGI with its own worker classes and does not "
                f"load others; use {_choices()}")
    return f"unknown worker class {value!r}; use {_choices()}"
