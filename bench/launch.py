"""Start a C WSGI server that has no command line of its own.

    python launch.py bjoern   apps:raw 8000            # one process
    python launch.py bjoern   apps:raw 8000 --fork 2   # listen, then fork: 2 processes
    python launch.py meinheld apps:raw 8000            # one process

Binds 127.0.0.1 only. ``--fork N`` gives N processes sharing one listening
socket: a pre-fork server whose HTTP layer costs almost nothing, the
reference for what the pre-fork design can reach. There is no supervisor:
the runner stops the whole process group.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Any


def load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "application")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("server", choices=["bjoern", "meinheld"])
    parser.add_argument("app", help="module:callable")
    parser.add_argument("port", type=int)
    parser.add_argument("--fork", type=int, default=1, help="processes (bjoern only)")
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    app = load(args.app)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if args.server == "bjoern":
        import bjoern

        bjoern.listen(app, "127.0.0.1", args.port)
        for _ in range(args.fork - 1):
            if os.fork() == 0:
                break
        bjoern.run()
    else:
        if args.fork != 1:
            parser.error("--fork works with bjoern only")
        import meinheld.server as meinheld

        meinheld.set_access_logger(None)
        meinheld.listen(("127.0.0.1", args.port))
        meinheld.run(app)


if __name__ == "__main__":
    main()
