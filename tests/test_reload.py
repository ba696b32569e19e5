"""--reload: a saved change is served within 2 s, broken code keeps the old
workers serving and is logged once with its file and line, fixing it brings
the new code in; the settings it cannot work with are refused. Real servers
on copies of a tiny app in tmp_path, with both engines."""

import os
import time

import pytest
import requests
from conftest import wait_until
from test_config import run_prefork
from test_signals import ClientLoop

from prefork.app import application_files, failure_location
from prefork.settings import watchfiles_installed

ENGINES = ["poll", pytest.param("inotify", marks=pytest.mark.skipif(
    not watchfiles_installed(), reason="needs watchfiles (prefork[reload])"))]
# The import system trusts a .pyc whose source has the same size and mtime in
# seconds: an edit within the same second must not be hidden by one.
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
SAVE_TO_SERVE = 2.0  # what the issue promises: new code within 2 s of the save


def write_app(tmp_path, text):
    """An app whose answer comes from a module it imports (helper.py)."""
    (tmp_path / "app.py").write_text(
        "import helper\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [helper.TEXT.encode()]\n")
    (tmp_path / "helper.py").write_text(f"TEXT = {text!r}\n")


def body(server):
    return requests.get(server.url, timeout=5).text


def serves_only(server, text, count=6):
    return all(body(server) == text for _ in range(count))


@pytest.fixture(params=ENGINES)
def reloading(request, prefork_server, tmp_path):
    def start(text="one", **settings):
        write_app(tmp_path, text)
        server = prefork_server("app:app", 2, cwd=tmp_path, env=ENV, reload=True,
                                reload_engine=request.param, **settings)
        server.wait_for_log(r"Reload: watching .* \(%s\)" % request.param)
        assert body(server) == text
        return server

    return start


def test_an_edit_is_served_within_two_seconds(reloading, tmp_path):
    server = reloading("one")
    with ClientLoop(server.url) as loop:
        (tmp_path / "helper.py").write_text("TEXT = 'two'\n")
        saved = time.monotonic()
        assert wait_until(lambda: body(server) == "two", SAVE_TO_SERVE), server.log_text()
        assert time.monotonic() - saved <= SAVE_TO_SERVE + 0.1
        server.wait_for_log(r"Reload complete: 2 worker\(s\) of generation 2")
    assert loop.failures == []  # a browser refreshing meanwhile is served
    assert serves_only(server, "two")
    assert "helper.py changed" in server.log_text()


def test_broken_code_keeps_the_old_workers_until_it_is_fixed(reloading, tmp_path):
    server = reloading("one")
    workers = set(server.worker_pids())
    helper = tmp_path / "helper.py"
    helper.write_text("TEXT = 'two'\nif True\n    pass\n")
    server.wait_for_log(r"Reload failed")
    assert serves_only(server, "one")
    assert set(server.worker_pids()) == workers
    failed = [line for line in server.log_text().splitlines() if "Reload failed" in line]
    assert len(failed) == 1, server.log_text()
    assert f"{helper}:2: SyntaxError" in failed[0]

    helper.write_text("TEXT = 'fixed'\n")
    assert wait_until(lambda: body(server) == "fixed", SAVE_TO_SERVE + 3), server.log_text()
    server.wait_for_log(r"Reload complete: 2 worker\(s\)")
    assert serves_only(server, "fixed")


def test_a_missing_module_is_named_with_the_line_that_imports_it(reloading, tmp_path):
    server = reloading("one")
    helper = tmp_path / "helper.py"
    helper.write_text("import json\nimport no_such_module_here\nTEXT = 'two'\n")
    server.wait_for_log(r"Reload failed")
    failed = [line for line in server.log_text().splitlines() if "Reload failed" in line]
    assert len(failed) == 1
    assert f"{helper}:2: ModuleNotFoundError: No module named 'no_such_module_here'" in failed[0]
    assert serves_only(server, "one")


def test_a_new_module_that_failed_to_import_is_watched_too(reloading, tmp_path):
    server = reloading("one")
    (tmp_path / "extra.py").write_text("VALUE = (\n")  # broken, and never imported so far
    (tmp_path / "helper.py").write_text("from extra import VALUE as TEXT\n")
    server.wait_for_log(r"Reload failed.*extra\.py:1: SyntaxError")
    (tmp_path / "extra.py").write_text("VALUE = 'from extra'\n")
    assert wait_until(lambda: body(server) == "from extra", SAVE_TO_SERVE + 3), server.log_text()


def test_an_extra_file_is_watched(reloading, tmp_path):
    data = tmp_path / "message.txt"
    data.write_text("hello")
    server = reloading("one", reload_extra_files=[str(data)])
    (tmp_path / "helper.py").write_text("TEXT = open('message.txt').read()\n")
    assert wait_until(lambda: body(server) == "hello", SAVE_TO_SERVE + 3), server.log_text()
    data.write_text("hello again")
    assert wait_until(lambda: body(server) == "hello again", SAVE_TO_SERVE), server.log_text()


def test_reload_with_preload_is_refused(tmp_path):
    write_app(tmp_path, "one")
    proc = run_prefork("--reload", "--preload", "-b", "127.0.0.1:0", "app:app", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("prefork: error: --reload cannot be combined with --preload")


def test_reload_with_preload_in_a_config_file_names_the_line(tmp_path):
    write_app(tmp_path, "one")
    (tmp_path / "conf.py").write_text("reload = True\npreload_app = True\n")
    proc = run_prefork("-c", "conf.py", "-b", "127.0.0.1:0", "app:app", cwd=tmp_path)
    assert proc.returncode == 2
    conf = tmp_path / "conf.py"
    assert proc.stderr.splitlines() == [
        f"prefork: error: {conf}:1: reload cannot be combined with {conf}:2: preload_app: the "
        "master would keep the application's old code and hand it to every new worker; drop "
        "--preload while developing"]


def test_inotify_without_watchfiles_is_a_bad_setting(tmp_path):
    # A package that fails to import stands for one that is not installed.
    (tmp_path / "watchfiles").mkdir()
    (tmp_path / "watchfiles" / "__init__.py").write_text("raise ImportError('not here')\n")
    write_app(tmp_path, "one")
    env = {"PYTHONPATH": str(tmp_path)}
    proc = run_prefork("--reload", "--reload-engine", "inotify", "app:app", cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "prefork: error: --reload-engine: inotify needs the watchfiles package: "
        "pip install 'prefork[reload]'"]


def test_reload_settings_without_reload_are_a_warning(tmp_path):
    write_app(tmp_path, "one")
    proc = run_prefork("--reload-extra-file", "x.txt", "--print-config", "app:app", cwd=tmp_path)
    assert proc.returncode == 0
    assert "prefork: warning: --reload-extra-file has no effect without --reload" in proc.stderr


def test_the_files_listed_are_the_applications_own(tmp_path, monkeypatch):
    package = tmp_path / "listed_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import json, email.message\nfrom . import part\n")
    (package / "part.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(__import__("sys").modules)
    __import__("listed_pkg")
    assert application_files(before) == [str(package / "__init__.py"), str(package / "part.py")]


def test_a_failed_import_lists_and_locates_the_broken_file(tmp_path, monkeypatch):
    (tmp_path / "broken_top.py").write_text("import broken_below\n")
    (tmp_path / "broken_below.py").write_text("x = 1\ny = (\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(__import__("sys").modules)
    with pytest.raises(SyntaxError) as info:
        __import__("broken_top")
    assert failure_location(info.value) == f"{tmp_path / 'broken_below.py'}:2"
    # (the worker's callers are prefork's own files; here this test file calls)
    listed = set(application_files(before, info.value)) - {os.path.abspath(__file__)}
    assert listed == {str(tmp_path / "broken_below.py"), str(tmp_path / "broken_top.py")}


def test_reload_works_in_a_daemon(tmp_path):
    """--daemon is allowed with --reload: the watcher starts after detaching."""
    import signal
    import socket
    import subprocess
    import sys

    from conftest import alive

    write_app(tmp_path, "one")
    pidfile, errors = tmp_path / "d.pid", tmp_path / "error.log"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "prefork", "--daemon", "--reload", "--reload-engine", "poll",
         "--pid", str(pidfile), "-b", f"127.0.0.1:{port}", "--error-logfile", str(errors),
         "app:app"], cwd=tmp_path, env=ENV, timeout=20, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    pid = int(pidfile.read_text())
    url = f"http://127.0.0.1:{port}"
    try:
        assert requests.get(url, timeout=5).text == "one"
        (tmp_path / "helper.py").write_text("TEXT = 'two'\n")
        assert wait_until(lambda: requests.get(url, timeout=5).text == "two", SAVE_TO_SERVE), \
            errors.read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not alive(pid), 10):
            os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not alive(pid), 10)
    assert "helper.py changed" in errors.read_text()
