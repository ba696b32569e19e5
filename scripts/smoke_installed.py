"""Smoke test of an installed prefork, run by scripts/check_package.sh.

    python -I smoke_installed.py CHECKOUT

Run it with the Python of a virtual environment that has the wheel installed,
from a directory outside the checkout (``-I`` keeps the checkout and the
script's directory off ``sys.path``), so that everything it uses comes from
the installed package. Every wait has a deadline; every process it starts is
stopped by its pid.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import importlib.resources
import os
import signal
import socket
import subprocess
import sys
import textwrap

APP = '''\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"installed " + environ["SERVER_SOFTWARE"].encode()]
'''

PLUGIN_TEST = '''\
import urllib.request


def test_fixture_serves(prefork_server):
    server = prefork_server("app:app", workers=2)
    with urllib.request.urlopen(server.url + "/", timeout=30) as response:
        assert response.read().startswith(b"installed prefork/")
'''

BIN = os.path.dirname(sys.executable)


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"smoke test failed: {message}")
    print(f"ok: {message}", flush=True)


def check_installed_copy(checkout: str) -> None:
    import prefork

    where = os.path.realpath(prefork.__file__)
    check(not where.startswith(os.path.realpath(checkout) + os.sep),
          f"prefork is imported from the installed wheel ({os.path.dirname(where)})")
    typed = importlib.resources.files("prefork").joinpath("py.typed")
    check(typed.is_file(), "py.typed is shipped (PEP 561)")


def check_entry_points() -> None:
    dist = importlib.metadata.distribution("prefork")
    plugins = [ep for ep in dist.entry_points if ep.group == "pytest11"]
    check([ep.value for ep in plugins] == ["prefork.pytest_plugin"],
          "the pytest11 entry point is registered")
    plugins[0].load()
    scripts = [ep.name for ep in dist.entry_points if ep.group == "console_scripts"]
    check("prefork" in scripts, f"console scripts: {', '.join(scripts)}")
    for name in scripts:  # preforkctl and any later command are covered too
        done = subprocess.run([os.path.join(BIN, name), "--help"], capture_output=True,
                              text=True, timeout=60)
        check(done.returncode == 0 and done.stdout.strip() != "", f"`{name} --help` runs")


def check_module_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "prefork", "--version"], capture_output=True,
                          text=True, timeout=60)
    version = importlib.metadata.version("prefork")
    check(done.returncode == 0 and version in done.stdout,
          f"`python -m prefork --version` says {done.stdout.strip()!r}")


def check_command_serves() -> None:
    """The `prefork` script serves a request on a socket this test bound."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    proc = subprocess.Popen(
        [os.path.join(BIN, "prefork"), "-w", "1", "-b", f"fd://{listener.fileno()}", "app:app"],
        pass_fds=(listener.fileno(),), start_new_session=True,
    )
    listener.close()
    try:
        # The listening socket exists already: the request waits in its queue
        # until the worker has loaded the app, so no polling is needed.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
        conn.close()
        check(response.status == 200 and body.startswith(b"installed prefork/"),
              f"`prefork app:app` answers {response.status} {body!r}")
        proc.send_signal(signal.SIGTERM)
        check(proc.wait(30) == 0, "`prefork` stops with status 0 on SIGTERM")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def check_pytest_plugin() -> None:
    """The fixture, loaded through the entry point alone, runs `python -m prefork`."""
    with open("test_smoke.py", "w") as f:
        f.write(PLUGIN_TEST)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_smoke.py"], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or "1 passed" not in done.stdout:
        print(textwrap.indent(done.stdout + done.stderr, "  "))
        check(False, "the prefork_server fixture serves the app")
    check(True, "the prefork_server fixture serves the app (pytest found it through pytest11)")


def main() -> None:
    checkout = sys.argv[1]
    with open("app.py", "w") as f:
        f.write(APP)
    sys.path.insert(0, os.getcwd())  # what `prefork app:app` and pytest do in this directory
    check_installed_copy(checkout)
    check_entry_points()
    check_module_runs()
    check_command_serves()
    check_pytest_plugin()
    print("smoke test passed")


if __name__ == "__main__":
    main()
