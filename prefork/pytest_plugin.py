"""pytest plugin: the ``prefork_server`` fixture, registered through ``pytest11``.

    def test_home(prefork_server):
        server = prefork_server("myapp:app", workers=2)
        assert requests.get(server.url).ok
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .testing import Server, serve


@pytest.fixture
def prefork_server() -> Iterator[Callable[..., Server]]:
    """A factory that starts real prefork servers, stopped at the end of the test.

    ``prefork_server(app, workers=1, **settings)`` takes the same arguments as
    ``prefork.testing.serve`` and returns a ready ``Server``.
    """
    with contextlib.ExitStack() as stack:

        def start(app: str, workers: int = 1, **kwargs: Any) -> Server:
            return stack.enter_context(serve(app, workers, **kwargs))

        yield start
