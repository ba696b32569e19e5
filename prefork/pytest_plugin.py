"""pytest plugin, registered through ``pytest11``: real prefork servers for tests.

    def test_home(prefork_server):
        server = prefork_server("myapp:app", workers=2)
        assert requests.get(server.url).ok

Fixtures: ``prefork_server`` (a factory; servers stopped after the test),
``prefork_module_server`` and ``prefork_session_server`` (factories whose
servers are shared, one per distinct set of arguments), and ``prefork_url`` /
``prefork_app_server`` (the server named by the ``prefork_app`` ini option or
``--prefork-app``, started once for the session). When a test that used a
server fails, the end of that server's log is added to its report.
"""

from __future__ import annotations

import weakref
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from .testing import Server, ServerPool, log_tail

DEFAULT_LOG_LINES = 50
_pools: weakref.WeakSet[ServerPool] = weakref.WeakSet()  # every pool still open
_log_start = pytest.StashKey[dict[int, int]]()  # id(server) -> log size when the test began


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("prefork", "prefork servers for tests")
    group.addoption(
        "--prefork-app", dest="prefork_app", default=None, metavar="APP_MODULE",
        help="the application of the session's prefork_url server (overrides the "
             "prefork_app ini option)",
    )
    parser.addini("prefork_app", "APP_MODULE served for the session at prefork_url, "
                  "e.g. myapp:app or myapp:create_app(testing=True)", default="")
    parser.addini("prefork_args", "extra prefork command-line arguments for the "
                  "prefork_url server, e.g. --workers 2 --timeout 10", type="args", default=[])
    parser.addini("prefork_log_lines", "how many of the last lines of a server's log go "
                  f"into the report of a failed test that used it (0: none; default "
                  f"{DEFAULT_LOG_LINES})", default=str(DEFAULT_LOG_LINES))


def pytest_configure(config: pytest.Config) -> None:
    log_lines(config)  # a bad value stops the run here, not at the first failure


def log_lines(config: pytest.Config) -> int:
    value = str(config.getini("prefork_log_lines")).strip()
    if not value.isdigit():
        raise pytest.UsageError(f"prefork_log_lines must be a whole number >= 0, not {value!r}")
    return int(value)


# --- fixtures


def _pool(scope: str, reuse: bool) -> Iterator[ServerPool]:
    with ServerPool(scope, reuse=reuse) as pool:
        _pools.add(pool)
        try:
            yield pool
        finally:
            _pools.discard(pool)


@pytest.fixture
def prefork_server() -> Iterator[ServerPool]:
    """A factory that starts real prefork servers, stopped at the end of the test.

    ``prefork_server(app, workers=1, **settings)`` takes the same arguments as
    ``prefork.testing.serve`` and returns a ready ``Server``.
    """
    yield from _pool("test", reuse=False)


@pytest.fixture(scope="module")
def prefork_module_server() -> Iterator[ServerPool]:
    """Like ``prefork_server``, but a server is shared by the tests of a module:
    the same arguments give the same server, stopped after the module's last test."""
    yield from _pool("module", reuse=True)


@pytest.fixture(scope="session")
def prefork_session_server() -> Iterator[ServerPool]:
    """Like ``prefork_server``, but a server is shared by the whole session (each
    pytest-xdist worker has its own): the same arguments give the same server."""
    yield from _pool("session", reuse=True)


@pytest.fixture(scope="session")
def prefork_app_server(request: pytest.FixtureRequest,
                       prefork_session_server: ServerPool) -> Server:
    """The session's server for ``--prefork-app`` or the ``prefork_app`` ini option,
    started with ``prefork_args``, importing the application from the rootdir."""
    config = request.config
    app = config.getoption("prefork_app") or config.getini("prefork_app")
    if not app:
        pytest.fail("prefork_url needs an application: set prefork_app in the pytest "
                    "configuration (pytest.ini, or [tool.pytest.ini_options] in "
                    "pyproject.toml) or pass --prefork-app", pytrace=False)
    args = list(config.getini("prefork_args"))
    return prefork_session_server(app, args=args, cwd=str(config.rootpath))


@pytest.fixture(scope="session")
def prefork_url(prefork_app_server: Server) -> str:
    """The base URL (``http://127.0.0.1:PORT``) of the session's ``prefork_app`` server."""
    return prefork_app_server.url


# --- which servers a test used


def servers_of(item: pytest.Item) -> list[Server]:
    """The servers a test can reach through its fixtures: each ``Server`` value,
    and for a pool reached only through the pool itself, all its servers."""
    values = list(getattr(item, "funcargs", {}).values())
    servers = [v for v in values if isinstance(v, Server)]
    for pool in (v for v in values if isinstance(v, ServerPool)):
        if not pool.reuse or not any(s in pool.servers for s in servers):
            servers += pool.servers
    unique: dict[int, Server] = {}
    for server in servers:
        unique.setdefault(id(server), server)
    return list(unique.values())


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    item.stash[_log_start] = {id(s): s.log_size() for pool in list(_pools) for s in pool.servers}
    yield


@pytest.hookimpl(trylast=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """After the fixtures are set up: a shared server that died before this test
    is an error of this test's setup, with the reason, not a refused connection."""
    for server in servers_of(item):
        if server.shared_by:
            server.check_alive()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    lines = log_lines(item.config)
    if not report.failed or not lines:
        return
    started = item.stash.get(_log_start, {})
    for server in servers_of(item):
        title = f"prefork server log: {server.app} (master pid {server.master_pid}), last {lines} lines"
        report.sections.append((title, log_tail(server, lines, started.get(id(server)))))
