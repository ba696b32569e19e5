"""A Gunicorn user's first hour with the command line: worker classes, ASGI
applications, warnings on the terminal, --help and --help-setting, the sources
--print-config names, exit statuses, load-error hints, and what an
application writes to wsgi.errors. Real `prefork` subprocesses throughout."""

import json
import os
import re
import signal
import socket

import pytest
import requests
from conftest import ROOT, wait_until
from test_config import run_prefork

from prefork import __version__
from prefork.settings import SETTINGS


def one_error_line(proc):
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefork: error: "), proc.stderr
    return lines[0]


# --- worker classes


@pytest.mark.parametrize("value, advice", [
    ("gevent", "use -k gthread"),
    ("eventlet", "use -k gthread"),
    ("tornado", "use -k gthread"),
    ("gunicorn.workers.ggevent.GeventWorker", "use -k gthread"),
    ("uvicorn.workers.UvicornWorker", "prefork serves WSGI"),
    ("myproject.asgi:Worker", "prefork serves WSGI"),
    ("myproject.workers.CustomWorker", "prefork serves WSGI"),
    ("gunicorn.workers.sync.SyncWorker", "use -k sync"),
    ("nosuchclass", "use -k sync"),
])
def test_other_worker_classes_are_a_one_line_error(value, advice):
    for check in ([], ["--check-config"]):
        proc = run_prefork(*check, "-k", value, "basic:hello")
        assert proc.returncode == 2, proc.stderr
        line = one_error_line(proc)
        assert line.startswith("prefork: error: --worker-class: ")
        assert repr(value) in line and advice in line
        assert "configuration OK" not in proc.stdout


def test_worker_class_in_a_config_file_or_the_environment(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 2\nworker_class = 'uvicorn.workers.UvicornWorker'\n")
    proc = run_prefork("-c", str(conf), "--check-config", "basic:hello")
    assert proc.returncode == 2
    assert one_error_line(proc).startswith(f"prefork: error: {conf}:2: worker_class: "
                                           "'uvicorn.workers.UvicornWorker' is an ASGI")
    proc = run_prefork("basic:hello", env={"GUNICORN_CMD_ARGS": "-k eventlet"})
    assert proc.returncode == 2
    assert one_error_line(proc).startswith("prefork: error: GUNICORN_CMD_ARGS: --worker-class: ")


def test_sync_worker_class_serves(test_app):
    server = test_app("basic:hello", worker_class="sync")
    assert requests.get(server.url + "/", timeout=5).status_code == 200
    assert "Using worker: sync" in server.log_text()
    assert "worker_class" not in server.log_text()  # a real setting now: no warning
    proc = run_prefork("--print-config", "-k", "SYNC")
    assert "worker_class = 'sync'" in proc.stdout and proc.returncode == 0


def test_harmless_gunicorn_settings_are_debug_only(test_app, tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("sendfile = True\nstrip_header_spaces = False\n")
    server = test_app("basic:hello", args=["-c", str(conf)])
    assert "sendfile" not in server.log_text() and "strip_header" not in server.log_text()
    server.stop()
    server = test_app("basic:hello", args=["-c", str(conf)], loglevel="debug")
    server.wait_for_log(r"\[DEBUG\] .*gunicorn\.conf\.py:1: Gunicorn setting 'sendfile'")
    assert "[WARNING]" not in server.log_text()
    # A value that changes behaviour is a warning.
    conf.write_text("sendfile = False\n")
    proc = run_prefork("-c", str(conf), "--check-config", "basic:hello")
    assert proc.returncode == 0
    assert "prefork: warning: " in proc.stderr and "sendfile" in proc.stderr


def test_threads_and_worker_connections_are_settings(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("threads = 1\nworker_connections = 1000\n")
    proc = run_prefork("-c", str(conf), "--check-config", "basic:hello")
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    conf.write_text("threads = 4\n")
    proc = run_prefork("-c", str(conf), "--print-config", "basic:hello")
    assert "worker_class = 'gthread'" in proc.stdout and "warning" not in proc.stderr


# --- ASGI applications


ASGI_APPS = '''\
async def app(scope, receive, send):
    pass

class Starlette:
    async def __call__(self, scope, receive, send):
        pass

star = Starlette()

class Asgi2:
    def __init__(self, scope):
        pass

    async def __call__(self, receive, send):
        pass

class WsgiClass:
    """PEP 3333 allows a class: calling it with environ, start_response is the request."""
    def __init__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        self.body = [b"from a class"]

    def __iter__(self):
        return iter(self.body)
'''


@pytest.mark.parametrize("name, kind", [
    ("app", "an async function"),
    ("star", "an object with an async __call__"),
    ("Asgi2", "a class with an async __call__"),
])
def test_asgi_applications_fail_at_load(tmp_path, name, kind):
    (tmp_path / "asgi_apps.py").write_text(ASGI_APPS)
    proc = run_prefork("--check-config", f"asgi_apps:{name}", cwd=tmp_path)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert f"'asgi_apps.{name}' is an ASGI application ({kind}) and prefork serves WSGI" in line
    proc = run_prefork("-b", "127.0.0.1:0", "-w", "2", f"asgi_apps:{name}", cwd=tmp_path)
    assert proc.returncode == 1  # stops at start, before serving any request
    assert "is an ASGI application" in proc.stderr
    assert "Shutting down: the application could not be loaded" in proc.stderr


def test_a_wsgi_class_is_not_taken_for_asgi(test_app, tmp_path):
    (tmp_path / "asgi_apps.py").write_text(ASGI_APPS)
    server = test_app("asgi_apps:WsgiClass", args=["--chdir", str(tmp_path)])
    assert requests.get(server.url + "/", timeout=5).text == "from a class"


# --- warnings reach the terminal when the log does not


def test_setting_warnings_go_to_stderr_and_to_the_log_file(test_app, tmp_path):
    errors = tmp_path / "error.log"
    for extra in ([], ["--capture-output"]):
        server = test_app("basic:hello", errorlog=str(errors), args=["--spew", *extra])
        printed = [line for line in server.log_text().splitlines() if "--spew" in line]
        assert printed == ["prefork: warning: command line: Gunicorn option --spew (spew) is "
                           "not supported by prefork yet; ignored. Use a debugger or py-spy "
                           "instead."]
        assert wait_until(lambda: "[WARNING] command line: Gunicorn option --spew" in
                          errors.read_text(), 5)
        server.stop()
        errors.unlink()


def test_warnings_are_not_doubled_when_the_log_is_stderr(test_app):
    server = test_app("basic:hello", args=["--spew"])
    assert server.log_text().count("--spew (spew)") == 1
    assert "prefork: warning:" not in server.log_text()


# --- --help, --help-setting, -v


def test_help_is_grouped_short_and_shows_defaults():
    proc = run_prefork("--help", env={"COLUMNS": "80"})
    assert proc.returncode == 0
    text = proc.stdout
    assert len(text.splitlines()) <= 211
    assert "``" not in text
    sections = [s.section for s in SETTINGS if s.flags]
    headings = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line[0].isspace()]
    assert headings == [*dict.fromkeys(sections), "Help"]
    flat = " ".join(text.split())
    for setting in SETTINGS:
        for flag in setting.flags:
            assert re.search(rf"(^|[ ,]){re.escape(flag)}[ ,]", text, re.M), flag
    for flag, default in [("--timeout", "30"), ("--graceful-timeout", "30"), ("--keep-alive", "2"),
                          ("--backlog", "2048"), ("--log-level", "info"), ("--boot-timeout", "120"),
                          ("--workers", "1; env: WEB_CONCURRENCY"), ("--bind", "127.0.0.1:8000; env: PORT")]:
        entry = flat.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert f"[default: {default}]" in entry, (flag, entry)
    assert "--help-setting NAME" in text and "-v, --version" in text


def test_version_short_flag():
    for flag in ("-v", "--version"):
        proc = run_prefork(flag)
        assert (proc.returncode, proc.stdout) == (0, f"prefork {__version__}\n")


@pytest.mark.parametrize("name", ["--keep-alive", "keepalive", "keep-alive"])
def test_help_setting_prints_the_full_paragraph(name):
    proc = run_prefork("--help-setting", name)
    assert proc.returncode == 0, proc.stderr
    paragraph = next(s.help for s in SETTINGS if s.name == "keepalive").replace("``", "")
    assert " ".join(proc.stdout.split()).find(paragraph) >= 0
    assert proc.stdout.startswith("--keep-alive SECONDS, keepalive = ... in a config file\n")
    assert "Default: 2" in proc.stdout and "Example: prefork --keep-alive 5 myapp:app" in proc.stdout


def test_help_setting_takes_gunicorn_names_and_refuses_unknown_ones():
    proc = run_prefork("--help-setting", "--log-file")  # Gunicorn's spelling of --error-logfile
    assert proc.returncode == 0 and proc.stdout.startswith("--error-logfile FILE")
    proc = run_prefork("--help-setting", "-k")
    assert proc.returncode == 0 and "prefork serves WSGI applications" in proc.stdout
    proc = run_prefork("--help-setting", "wrokers")
    assert proc.returncode == 2
    assert one_error_line(proc) == ("prefork: error: --help-setting: no setting named 'wrokers'; "
                                    "did you mean workers?")
    proc = run_prefork("--help-setting", "--log-syslog-prefix")
    assert proc.returncode == 2 and "not supported by prefork yet" in proc.stderr


# --- --print-config names the environment variables defaults come from


def test_print_config_names_environment_defaults():
    env = {"PORT": "5001", "WEB_CONCURRENCY": "3", "FORWARDED_ALLOW_IPS": "10.0.0.0/8"}
    proc = run_prefork("--print-config", env=env)
    rows = dict(line.split("  # ") for line in proc.stdout.splitlines())
    rows = {text.split(" = ")[0].strip(): (text.split(" = ", 1)[1].strip(), source)
            for text, source in rows.items()}
    assert rows["bind"] == ("['0.0.0.0:5001']", "environment variable PORT")
    assert rows["workers"] == ("3", "environment variable WEB_CONCURRENCY")
    assert rows["forwarded_allow_ips"] == ("['10.0.0.0/8']", "environment variable FORWARDED_ALLOW_IPS")
    proc = run_prefork("--print-config", "-w", "2", env={"PORT": "", **{"WEB_CONCURRENCY": "3"}})
    assert re.search(r"^bind = \['127.0.0.1:8000'\] +# default$", proc.stdout, re.M)
    assert re.search(r"^workers = 2 +# command line$", proc.stdout, re.M)


# --- exit statuses: 2 for a bad setting, 1 for a failure at run time


def _taken_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


@pytest.mark.parametrize("args, status, message", [
    (["--no-such-option", "basic:hello"], 2, "No such option"),
    (["-w", "zero", "basic:hello"], 2, "--workers: expected an integer"),
    (["-k", "gevent", "basic:hello"], 2, "--worker-class: 'gevent'"),
    (["-b", "bad..host:8000", "basic:hello"], 2, "--bind: cannot resolve bad..host:8000"),
    (["--check-config", "-b", "bad..host:8000", "basic:hello"], 2, "cannot resolve"),
    (["--log-config-dict", "[1]", "basic:hello"], 2, "--log-config-dict: expected a dictionary"),
    ([], 2, "missing APP_MODULE"),
    (["--check-config", "no_such_module:app"], 1, "no module named 'no_such_module'"),
    (["-b", "127.0.0.1:0", "no_such_module:app"], 1, "no module named 'no_such_module'"),
    (["-b", "127.0.0.1:{taken}", "basic:hello"], 1, "Address already in use"),
])
def test_exit_statuses(args, status, message):
    with _taken_port() as taken:
        port = taken.getsockname()[1]
        proc = run_prefork(*[a.replace("{taken}", str(port)) for a in args])
    assert proc.returncode == status, proc.stderr
    assert message in proc.stderr


def test_a_stopped_server_exits_0(test_app):
    server = test_app("basic:hello")
    assert server.stop(signal.SIGTERM) == 0


def test_exit_statuses_are_documented_in_one_table():
    with open(os.path.join(ROOT, "docs", "settings.md"), encoding="utf-8") as f:
        text = f.read()
    table = text.split("## Exit status\n", 1)[1].strip().split("\n\n", 1)[0]
    assert [row.split("|")[1].strip() for row in table.splitlines()[2:]] == ["0", "1", "2"]


# --- load errors say what to do


def test_missing_module_suggests_chdir(tmp_path):
    (tmp_path / "mysite" / "mysite").mkdir(parents=True)
    (tmp_path / "mysite" / "mysite" / "__init__.py").write_text("")
    (tmp_path / "mysite" / "mysite" / "wsgi.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'django-ish']\n")
    proc = run_prefork("--check-config", "mysite.wsgi", cwd=tmp_path)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "no module named 'mysite.wsgi'" in line and "add --chdir mysite" in line
    proc = run_prefork("--check-config", "--chdir", "mysite", "mysite.wsgi", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_a_raising_factory_says_it_raised_when_called(tmp_path):
    (tmp_path / "factory.py").write_text(
        "def create_app(env):\n"
        "    raise RuntimeError('no database for ' + env)\n")
    proc = run_prefork("--check-config", "factory:create_app('prod')", cwd=tmp_path)
    assert proc.returncode == 1
    first = proc.stderr.splitlines()[0]
    assert first == ("prefork: error: cannot load the application \"factory:create_app('prod')\": "
                     "the factory 'factory.create_app' raised an exception when called: "
                     f"{tmp_path / 'factory.py'}:2: RuntimeError: no database for prod")
    assert "RuntimeError: no database for prod" in proc.stderr and "importing" not in proc.stderr
    proc = run_prefork("-b", "127.0.0.1:0", "factory:create_app('prod')", cwd=tmp_path)
    assert proc.returncode == 1
    assert "the factory 'factory.create_app' raised an exception when called" in proc.stderr
    assert "while importing" not in proc.stderr


# --- what the application writes to wsgi.errors


FLASK_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\] ERROR in flasklog: flask says hello$")


def test_flask_log_lines_are_written_as_flask_wrote_them(test_app, tmp_path):
    errors = tmp_path / "error.log"
    server = test_app("flasklog:app", errorlog=str(errors))
    assert requests.get(server.url + "/log", timeout=5).text == "logged"
    assert wait_until(lambda: "flask says hello" in errors.read_text(), 5)
    lines = [line for line in errors.read_text().splitlines() if "flask says" in line]
    assert len(lines) == 1 and FLASK_LINE.match(lines[0]), lines
    # A traceback Flask logs stays one block, under Flask's own first line.
    assert requests.get(server.url + "/boom", timeout=5).status_code == 500
    assert wait_until(lambda: "RuntimeError: flask boom" in errors.read_text(), 5)
    text = errors.read_text()
    block = text[text.index("ERROR in app: Exception on /boom [GET]"):]
    assert block.splitlines()[1] == "Traceback (most recent call last):"


def test_flask_log_lines_in_json_logs_are_records(test_app):
    server = test_app("flasklog:app", log_format="json")
    requests.get(server.url + "/log", timeout=5)
    server.wait_for_log("flask says hello")
    records = [json.loads(line) for line in server.log_text().splitlines()
               if "flask says hello" in line]
    assert len(records) == 1
    assert records[0]["level"] == "error"
    assert records[0]["message"].endswith("ERROR in flasklog: flask says hello")
