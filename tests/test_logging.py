"""The error log, --capture-output, logging.config files and dicts, and
reopening log files (real servers, real files, real signals)."""

import json
import os
import re
import signal
import time

import requests

LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[(\d+)\] \[(INFO|WARNING|ERROR)\] ")


def wait_for_text(path, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in {path}:\n{content}")
        time.sleep(0.02)


def test_default_error_format_has_time_pid_and_level(test_app):
    server = test_app("logapp:app")
    requests.get(server.url + "/?errors=boom", timeout=5)
    server.wait_for_log("errors:boom")
    lines = [line for line in server.log_text().splitlines() if line.startswith("[")]
    assert lines and all(LINE.match(line) for line in lines), lines
    first = LINE.match(lines[0])
    assert first.group(1) == str(server.master_pid) and "Starting prefork" in lines[0]
    # What the application writes to wsgi.errors is its own line, as in Gunicorn.
    assert "errors:boom" in server.log_text().splitlines()


def test_log_config_dict_changes_the_format(test_app):
    config = {
        "formatters": {"mine": {"format": "MINE %(levelname)s|%(name)s|%(message)s"}},
        "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "mine",
                             "stream": "ext://sys.stderr"}},
        "loggers": {"prefork.error": {"handlers": ["out"], "level": "INFO", "propagate": False}},
    }
    server = test_app("logapp:app", logconfig_dict=json.dumps(config))
    requests.get(server.url + "/?errors=custom", timeout=5)
    server.wait_for_log("(?m)^errors:custom$")  # the application's line, as written
    assert "MINE INFO|prefork.error|Starting prefork" in server.log_text()
    assert "MINE ERROR|prefork.error|errors:custom" not in server.log_text()
    assert not LINE.search(server.log_text())


def test_gunicorn_named_loggers_in_a_config_file_are_used(test_app, tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        "logconfig_dict = {\n"
        "    'formatters': {'g': {'format': 'GUNI %(name)s %(message)s'}},\n"
        "    'handlers': {'h': {'class': 'logging.StreamHandler', 'formatter': 'g'}},\n"
        "    'loggers': {'gunicorn.error': {'handlers': ['h'], 'level': 'INFO', 'propagate': False},\n"
        "                'gunicorn.access': {'handlers': ['console'], 'level': 'INFO'}},\n"
        "}\n")
    server = test_app("logapp:app", args=["-c", str(conf)])
    requests.get(server.url + "/gun", timeout=5)
    server.wait_for_log(re.escape('"GET /gun HTTP/1.1" 200'))  # access log on: Gunicorn's "console"
    assert "GUNI gunicorn.error Starting prefork" in server.log_text()


def test_log_config_ini_and_json(test_app, tmp_path):
    ini = tmp_path / "logging.ini"
    ini.write_text(
        "[loggers]\nkeys=root,access\n\n"
        "[handlers]\nkeys=file\n\n"
        "[formatters]\nkeys=plain\n\n"
        "[logger_root]\nlevel=WARNING\nhandlers=\n\n"
        "[logger_access]\nlevel=INFO\nhandlers=file\npropagate=0\nqualname=prefork.access\n\n"
        "[handler_file]\nclass=FileHandler\nformatter=plain\nargs=('%(here)s/access.log',)\n\n"
        "[formatter_plain]\nformat=INI %(message)s\n")
    server = test_app("logapp:app", logconfig=str(ini))  # no --access-logfile: the config enables it
    requests.get(server.url + "/ini", timeout=5)
    assert wait_for_text(tmp_path / "access.log", '"GET /ini HTTP/1.1"').startswith("INI 127.0.0.1 - - [")
    server.stop()
    as_json = tmp_path / "logging.json"
    as_json.write_text(json.dumps({"formatters": {"j": {"format": "JSONCONF %(message)s"}},
                                   "handlers": {"e": {"class": "logging.StreamHandler", "formatter": "j"}},
                                   "loggers": {"prefork.error": {"handlers": ["e"]}}}))
    server = test_app("logapp:app", logconfig_json=str(as_json))
    assert "JSONCONF Starting prefork" in server.log_text()


def test_capture_output_sends_prints_to_the_error_log(test_app, tmp_path):
    errors = tmp_path / "error.log"
    server = test_app("logapp:app", errorlog=str(errors), accesslog="-", capture_output=True)
    requests.get(server.url + "/?print=hello", timeout=5)
    content = wait_for_text(errors, "stderr:hello")
    assert "stdout:hello" in content
    server.wait_for_log(re.escape('"GET /?print=hello HTTP/1.1" 200'))  # the access log stays on stdout
    assert "GET /?print" not in errors.read_text()


def test_without_capture_output_prints_stay_on_stdout(test_app, tmp_path):
    errors = tmp_path / "error.log"
    server = test_app("logapp:app", errorlog=str(errors))
    requests.get(server.url + "/?print=free", timeout=5)
    server.wait_for_log("stdout:free")
    assert "free" not in errors.read_text()


def test_usr1_reopens_every_kind_of_log_file(test_app, tmp_path):
    errors, access, audit = tmp_path / "error.log", tmp_path / "access.log", tmp_path / "audit.log"
    config = {"handlers": {"audit": {"class": "logging.FileHandler", "filename": str(audit)}},
              "loggers": {"app.audit": {"handlers": ["audit"], "level": "INFO"}}}
    server = test_app("logapp:app", errorlog=str(errors), accesslog=str(access),
                      capture_output=True, logconfig_dict=json.dumps(config))
    requests.get(server.url + "/?print=before&errors=before&audit=before", timeout=5)
    wait_for_text(audit, "audit:before")
    wait_for_text(access, "before")
    for path in (errors, access, audit):
        os.rename(path, f"{path}.1")  # what logrotate does
    (worker,) = server.worker_pids()
    os.kill(worker, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not (access.exists() and audit.exists() and errors.exists()):
        assert time.monotonic() < deadline, "log files were not reopened"
        time.sleep(0.02)
    requests.get(server.url + "/?print=after&errors=after&audit=after", timeout=5)
    assert "audit:after" in wait_for_text(audit, "audit:after")
    assert "GET /?print=after" in wait_for_text(access, "after")
    content = wait_for_text(errors, "stderr:after")
    assert "stdout:after" in content and "errors:after" in content
    for path in (errors, access, audit):
        assert "after" not in open(f"{path}.1").read()


def test_logs_survive_an_application_that_runs_dictconfig(test_app, tmp_path):
    errors, access = tmp_path / "error.log", tmp_path / "access.log"
    server = test_app("logapp_dictconfig:app", errorlog=str(errors), accesslog=str(access))
    requests.get(server.url + "/?errors=still-here", timeout=5)
    wait_for_text(errors, "errors:still-here")
    wait_for_text(access, '"GET /?errors=still-here HTTP/1.1" 200')
    assert "Traceback" not in server.log_text() + errors.read_text()
