"""Configuration: precedence, config files (Gunicorn's too), GUNICORN_CMD_ARGS,
--print-config, --check-config, bad values, and the generated settings docs."""

import importlib.util
import itertools
import os
import shlex
import subprocess
import sys

import pytest
import requests
from conftest import APPS, ROOT

from prefork import cli
from prefork.cli import load_config, translate_gunicorn_args
from prefork.compat import GUNICORN_SETTINGS
from prefork.settings import BY_CONFIG_NAME, SETTINGS, unsupported_gunicorn_names


def run_prefork(*args, env=None, cwd=APPS, timeout=30):
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("PREFORK_CMD_ARGS", "GUNICORN_CMD_ARGS")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "prefork", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


# --- precedence: defaults < config file < PREFORK_CMD_ARGS < command line

# setting: (value in the file, in the environment, on the command line, expected for each)
MATRIX = {
    "workers": (("2", 2), ("3", 3), ("4", 4), 1),
    "timeout": (("10", 10.0), ("11.5", 11.5), ("12", 12.0), 30.0),
    "loglevel": (("'warning'", "warning"), ("error", "error"), ("debug", "debug"), "info"),
    "access_log_format": (("'F %(h)s'", "F %(h)s"), ("E %(h)s", "E %(h)s"),
                          ("C %(h)s", "C %(h)s"), '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'),
    "bind": (("['127.0.0.1:1001']", ["127.0.0.1:1001"]), ("127.0.0.1:1002", ["127.0.0.1:1002"]),
             ("127.0.0.1:1003", ["127.0.0.1:1003"]), ["127.0.0.1:8000"]),
    "capture_output": (("True", True), (None, True), (None, True), False),
}


@pytest.mark.parametrize("in_file, in_env, in_cli", list(itertools.product([False, True], repeat=3)))
def test_precedence_matrix(tmp_path, monkeypatch, in_file, in_env, in_cli):
    monkeypatch.chdir(tmp_path)
    file_lines, env_args, cli_args = [], [], []
    for name, (file_value, env_value, cli_value, _) in MATRIX.items():
        flag = BY_CONFIG_NAME[name].option_name
        file_lines.append(f"{name} = {file_value[0]}")
        env_args += [flag] if env_value[0] is None else [flag, env_value[0]]
        cli_args += [flag] if cli_value[0] is None else [flag, cli_value[0]]
    if in_file:
        (tmp_path / "prefork.conf.py").write_text("\n".join(file_lines) + "\n")
    env = {"PREFORK_CMD_ARGS": shlex.join(env_args)} if in_env else {}
    cfg = load_config([*(cli_args if in_cli else []), "app:app"], env)
    for name, (file_value, env_value, cli_value, default) in MATRIX.items():
        if in_cli:
            expected, source = cli_value[1], "command line"
        elif in_env:
            expected, source = env_value[1], "PREFORK_CMD_ARGS"
        elif in_file:
            line = file_lines.index(f"{name} = {file_value[0]}") + 1
            expected, source = file_value[1], f"config file {tmp_path}/prefork.conf.py:{line}"
        else:
            expected, source = default, "default"
        assert cfg.get(name) == expected, name
        assert cfg.sources[name] == source, name


def test_gunicorn_cmd_args_used_only_without_prefork_cmd_args(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(["app:app"], {"GUNICORN_CMD_ARGS": "-w 3 --timeout 9"})
    assert (cfg.workers, cfg.timeout) == (3, 9.0)
    assert cfg.sources["workers"] == "GUNICORN_CMD_ARGS"
    cfg = load_config(["app:app"], {"GUNICORN_CMD_ARGS": "-w 3", "PREFORK_CMD_ARGS": "-t 5"})
    assert (cfg.workers, cfg.timeout) == (1, 5.0)
    cfg = load_config(["-w", "2", "app:app"], {"GUNICORN_CMD_ARGS": "-w 3"})
    assert cfg.workers == 2


def test_gunicorn_only_options_are_warnings_not_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    unsupported = sorted(n for n in unsupported_gunicorn_names() if GUNICORN_SETTINGS[n].flags)
    if not unsupported:
        pytest.skip("prefork supports every Gunicorn option")
    args, expected = [], []
    for name in unsupported:
        known = GUNICORN_SETTINGS[name]
        flag = known.flags[-1]
        args += [flag] if known.kind == "flag" else [flag, "1"]
        expected.append(f"GUNICORN_CMD_ARGS: Gunicorn option {flag} ({name}) is not supported")
    cfg = load_config(["app:app"], {"GUNICORN_CMD_ARGS": shlex.join([*args, "-w", "2"])})
    assert cfg.workers == 2
    # "--threads 1" and --worker-connections change nothing here: notes, not warnings.
    said = sorted(cfg.warnings + cfg.notes)
    assert len(said) == len(unsupported)
    for warning, start in zip(said, sorted(expected), strict=True):
        assert warning.startswith(start), warning
    assert not any("(threads)" in w or "(worker_connections)" in w for w in cfg.warnings)


def test_gunicorn_flag_spelled_differently_is_translated(monkeypatch):
    """When prefork names a Gunicorn setting's flag differently, Gunicorn's flag
    still works (a stand-in setting shows the mechanism, whatever the table holds)."""
    from dataclasses import replace

    stand_in = replace(BY_CONFIG_NAME["timeout"], name="syslog_address",
                       flags=("--syslog-address",), gunicorn="syslog_addr")
    monkeypatch.setitem(BY_CONFIG_NAME, "syslog_addr", stand_in)
    monkeypatch.setitem(cli._OUR_FLAGS, "--syslog-address", stand_in)
    args, warnings = translate_gunicorn_args(
        ["--log-syslog-to", "5", "-w", "2", "--log-syslog-to=6", "app:app"], "command line")
    assert args == ["--syslog-address", "5", "-w", "2", "--syslog-address", "6", "app:app"]
    assert warnings == []


def test_options_of_ours_keep_their_values():
    args = ["--access-logformat", "--threads", "--error-logfile", "-", "-w4", "--", "--threads"]
    assert translate_gunicorn_args(args, "command line") == (args, [])


# --- config files


GUNICORN_CONF = '''\
# A gunicorn.conf.py as people write them.
import multiprocessing
import os

bind = "127.0.0.1:9"
workers = multiprocessing.cpu_count() * 0 + 1
worker_class = "sync"
threads = 2
keepalive = 2
timeout = 25
graceful_timeout = 5
loglevel = "WARNING"
accesslog = os.environ["ACCESS_LOG"]
access_log_format = 'GCONF %(h)s "%(r)s" %(s)s'
proc_name = "gconf-test"
max_requests = 1000
raw_env = ["A=1"]
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}


def on_starting(server):
    server.log.info("on_starting hook")


def post_fork(server, worker):
    server.log.info("worker spawned (pid: %s)", worker.pid)


def when_ready(server):
    pass


def _private_helper():
    return 1
'''


def test_real_gunicorn_conf_is_accepted(test_app, tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF)
    access = tmp_path / "access.log"
    server = test_app("logapp:app", args=["-c", str(conf)], env={**os.environ, "ACCESS_LOG": str(access)})
    response = requests.get(server.url + "/x?y=1", timeout=5)
    assert response.status_code == 200
    line = wait_for_line(access)
    assert line == 'GCONF 127.0.0.1 "GET /x?y=1 HTTP/1.1" 200'
    log = server.log_text()
    assert "[WARNING]" in log and "[INFO]" not in log  # loglevel from the file
    names = [n for n in GUNICORN_SETTINGS if f"\n{n} = " in "\n" + GUNICORN_CONF
             or f"\ndef {n}(" in GUNICORN_CONF]
    for name in names:
        warned = f"Gunicorn setting {name!r} is not supported" in log
        assert warned == (name in unsupported_gunicorn_names()), name
    assert "_private_helper" not in log and "multiprocessing" not in log
    with open(f"/proc/{server.master_pid}/cmdline", "rb") as f:
        assert b"gconf-test" in f.read()


def wait_for_line(path, timeout=5.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text().splitlines()[-1]
        time.sleep(0.02)
    raise AssertionError(f"nothing written to {path}")


def test_gunicorn_conf_py_is_the_fallback_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gunicorn.conf.py").write_text("workers = 3\n")
    assert load_config(["app:app"], {}).workers == 3
    (tmp_path / "prefork.conf.py").write_text("workers = 2\n")
    assert load_config(["app:app"], {}).workers == 2


def test_unknown_and_cli_only_names_in_a_file_are_warnings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prefork.conf.py").write_text(
        "wokers = 2\nprint_config = True\nLOG_DIR = '/var/log'\nclass Helper: pass\n")
    cfg = load_config(["app:app"], {})
    conf = tmp_path / "prefork.conf.py"
    assert cfg.warnings == [
        f"{conf}:1: unknown setting 'wokers' ignored; did you mean 'workers'?",
        f"{conf}:2: setting 'print_config' cannot be set in a config file "
        "(use --print-config on the command line); ignored",
    ]
    assert cfg.workers == 1 and cfg.print_config is False


def test_wsgi_app_in_the_file_names_the_application(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text('wsgi_app = "basic:pid"\n')
    proc = run_prefork("-c", str(conf), "--check-config")
    assert proc.returncode == 0, proc.stderr
    assert "application 'basic:pid' loaded" in proc.stdout
    proc = run_prefork("-c", str(conf), "--print-config", "basic:hello")
    assert "wsgi_app = 'basic:hello'" in proc.stdout


# --- bad values: one line naming the setting, the file and the line; exit 2


@pytest.mark.parametrize("body, message", [
    ("workers = 'four'", "workers: expected an integer, got 'four'"),
    ("timeout = -1", "timeout: must be a finite number ≥ 0, got -1"),
    ("loglevel = 'loud'", "loglevel: expected one of debug, info, warning, error, critical, got 'loud'"),
    ("access_log_format = '%(h'", "access_log_format: invalid access log format '%(h': incomplete format key"),
    ("logconfig_dict = ['x']", "logconfig_dict: expected a dictionary, got list"),
    ("capture_output = 'maybe'", "capture_output: expected true or false, got 'maybe'"),
])
def test_bad_value_in_a_file_is_one_line_and_exit_2(tmp_path, body, message):
    conf = tmp_path / "bad.conf.py"
    conf.write_text(f"# settings\n\n{body}\n")
    proc = run_prefork("-c", str(conf), "basic:hello")
    assert proc.returncode == 2
    assert proc.stderr == f"prefork: error: {conf}:3: {message}\n"


def test_bad_value_in_the_environment_names_the_variable():
    proc = run_prefork("basic:hello", env={"GUNICORN_CMD_ARGS": "--timeout soon"})
    assert proc.returncode == 2
    assert proc.stderr == "prefork: error: GUNICORN_CMD_ARGS: --timeout: expected a number of seconds, got 'soon'\n"


def test_bad_log_config_dict_is_exit_2(tmp_path):
    proc = run_prefork("--log-config-dict", '{"handlers": {"h": {"class": "no.such.Handler"}}}',
                       "basic:hello")
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("prefork: error: --log-config-dict: "), proc.stderr
    assert "no" in lines[0]


# --- --print-config and --check-config


def test_print_config_shows_values_and_sources(tmp_path):
    conf = tmp_path / "prefork.conf.py"
    conf.write_text("import os\n\nworkers = 3\ntimeout = 7\n\n\ndef on_starting(server):\n    pass\n")
    proc = run_prefork("--print-config", "-c", str(conf), "--log-level", "debug", "basic:hello",
                       env={"PREFORK_CMD_ARGS": "--timeout 9"})
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        text, _, source = line.partition("  # ")
        name, _, value = text.strip().partition(" = ")
        rows[name] = (value, source)
    assert set(rows) == {s.name for s in SETTINGS}
    assert rows["workers"] == ("3", f"config file {conf}:3")
    assert rows["timeout"] == ("9.0", "PREFORK_CMD_ARGS")
    assert rows["loglevel"] == ("'debug'", "command line")
    assert rows["wsgi_app"] == ("'basic:hello'", "command line")
    assert rows["backlog"] == ("2048", "default")
    assert rows["config"] == (repr(str(conf)), "command line")
    if "on_starting" in rows:  # once server hooks are settings
        assert rows["on_starting"] == ("<function on_starting>", f"config file {conf}:7")
    assert "Listening" not in proc.stdout + proc.stderr  # printed, did not serve


def test_print_config_needs_no_application():
    proc = run_prefork("--print-config", cwd=ROOT)
    assert proc.returncode == 0
    assert "wsgi_app = None" in proc.stdout


def test_check_config_exit_codes(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('no database')\n")
    ok = run_prefork("--check-config", "basic:hello")
    assert ok.returncode == 0 and "configuration OK" in ok.stdout, ok.stderr
    missing = run_prefork("--check-config", "nosuchmodule:app")
    assert missing.returncode == 1
    assert missing.stderr.startswith("prefork: error: cannot load the application: no module named 'nosuchmodule'")
    raising = run_prefork("--check-config", "--chdir", str(tmp_path), "broken:app")
    assert raising.returncode == 1
    assert "RuntimeError: no database" in raising.stderr
    # A bad setting is status 2 with --check-config too, as without it.
    bad = run_prefork("--check-config", "-w", "0", "basic:hello")
    assert bad.returncode == 2
    assert bad.stderr == "prefork: error: --workers: must be at least 1, got 0\n"
    no_app = run_prefork("--check-config", cwd=ROOT)
    assert no_app.returncode == 2 and "missing APP_MODULE" in no_app.stderr



def test_http_parser_httptools_without_httptools_fails_at_start(tmp_path):
    (tmp_path / "httptools.py").write_text("raise ImportError('No module named httptools')\n")
    hide = {"PYTHONPATH": str(tmp_path)}  # shadows an installed httptools
    expected = ("prefork: error: --http-parser: httptools is not installed: "
                "pip install 'prefork[httptools]'\n")
    for args in (("--check-config",), ("-b", "127.0.0.1:0")):
        proc = run_prefork(*args, "--http-parser", "httptools", "basic:hello", env=hide)
        assert proc.returncode != 0
        assert proc.stderr == expected
    bad = run_prefork("--check-config", "--http-parser", "llhttp", "basic:hello")
    assert bad.returncode == 2 and "expected one of python, httptools" in bad.stderr


@pytest.mark.parametrize("version", ["0.6.0", "0.6.1", "0.5.0"])
def test_http_parser_httptools_too_old_fails_at_start(tmp_path, version):
    # httptools before 0.6.4 accepts obs-fold and empty field names in heads.
    (tmp_path / "httptools.py").write_text(f"__version__ = {version!r}\n")
    older = {"PYTHONPATH": str(tmp_path)}  # shadows the installed httptools
    proc = run_prefork("--check-config", "--http-parser", "httptools", "basic:hello", env=older)
    assert proc.returncode != 0
    assert proc.stderr == (f"prefork: error: --http-parser: httptools {version} is too old (its "
                           "parser accepts heads prefork refuses): pip install 'httptools>=0.6.4'\n")


# --- the generated documentation


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", os.path.join(ROOT, "scripts", "gen_docs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_docs_are_current():
    gen = _gen_docs()
    for path, text in gen.outputs().items():
        with open(path, encoding="utf-8") as f:
            assert f.read() == text, f"{os.path.relpath(path, ROOT)} is stale: run python scripts/gen_docs.py"


def test_settings_doc_covers_every_setting():
    text = _gen_docs().render_settings()
    for setting in SETTINGS:
        section = text.split(f"### `{setting.name}`\n", 1)[1].split("\n### ", 1)[0]
        assert setting.help in section
        assert "**Default:**" in section
        for flag in setting.flags:
            assert f"`{flag}" in section
        assert setting.example and "Example:" in section, f"{setting.name}: give it an example"


# --- header_timeout


def test_header_timeout_default_flag_and_file(tmp_path):
    proc = run_prefork("--print-config", "basic:hello")
    assert "header_timeout = 10.0" in proc.stdout and proc.returncode == 0
    proc = run_prefork("--print-config", "--header-timeout", "2.5", "basic:hello")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("header_timeout = "))
    assert line.startswith("header_timeout = 2.5 ") and line.endswith("# command line")
    conf = tmp_path / "conf.py"
    conf.write_text("header_timeout = 0\n")
    proc = run_prefork("--print-config", "-c", str(conf), "basic:hello")
    assert "header_timeout = 0.0" in proc.stdout, proc.stdout


@pytest.mark.parametrize("value, message", [
    ("-1", "must be a finite number ≥ 0, got '-1'"),
    ("soon", "expected a number of seconds, got 'soon'"),
    ("inf", "must be a finite number ≥ 0, got 'inf'"),
])
def test_header_timeout_bad_values(value, message):
    proc = run_prefork("--header-timeout", value, "basic:hello")
    assert (proc.returncode, proc.stderr.strip()) == (2, f"prefork: error: --header-timeout: {message}")
