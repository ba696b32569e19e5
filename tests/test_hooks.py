"""Server hooks from a config file: every hook is called, in order, with usable arguments."""

import os
import signal

import pytest
import requests
from conftest import wait_until

RECORDER = '''
import os

_LOG = os.environ["HOOK_LOG"]


def _rec(*fields):
    with open(_LOG, "a") as f:
        f.write(" ".join(str(x) for x in fields) + "\\n")


def on_starting(server):
    _rec("on_starting", server.pid == os.getpid(), type(server.cfg).__name__)

def when_ready(server):
    _rec("when_ready", server.pid, len(server.workers))

def pre_fork(server, worker):
    _rec("pre_fork", worker.age, server.pid == os.getpid())

def post_fork(server, worker):
    _rec("post_fork", worker.pid == os.getpid(), worker.age)

def post_worker_init(worker):
    _rec("post_worker_init", worker.pid == os.getpid(), worker.log is not None)

def pre_request(worker, req):
    _rec("pre_request", req.method, req.path)

def post_request(worker, req, environ, resp):
    _rec("post_request", req.path, resp.status.split()[0], environ["PATH_INFO"])

def nworkers_changed(server, new_value, old_value):
    _rec("nworkers_changed", new_value, old_value)

def on_reload(server):
    _rec("on_reload", server.pid)

def worker_int(worker):
    _rec("worker_int", worker.pid == os.getpid())

def worker_abort(worker):
    _rec("worker_abort", worker.pid == os.getpid())

def pre_exec(server):
    _rec("pre_exec", server.pid != os.getpid())

def child_exit(server, worker):
    _rec("child_exit", server.pid == os.getpid(), worker.pid != os.getpid())

def worker_exit(server, worker):
    _rec("worker_exit", worker.pid == os.getpid())

def on_exit(server):
    _rec("on_exit", server.pid == os.getpid())
'''


@pytest.fixture
def recorder(tmp_path):
    conf = tmp_path / "hooks.conf.py"
    conf.write_text(RECORDER)
    log = tmp_path / "hooks.log"
    env = dict(os.environ, HOOK_LOG=str(log))

    def calls():
        return log.read_text().splitlines() if log.exists() else []

    return conf, env, calls


def names(lines):
    return [line.split()[0] for line in lines]


def test_lifecycle_hooks_in_order(test_app, recorder):
    conf, env, calls = recorder
    server = test_app("basic:hello", workers=1, config=str(conf), env=env)
    assert wait_until(lambda: "when_ready" in names(calls()), 5)
    assert names(calls()) == ["on_starting", "nworkers_changed", "pre_fork", "post_fork",
                              "post_worker_init", "when_ready"]
    requests.get(server.url + "/hello")
    assert wait_until(lambda: "post_request" in names(calls()), 5)
    server.send_signal(signal.SIGTTIN)
    server.wait_workers(2)
    server.send_signal(signal.SIGHUP)
    server.wait_notify("READY=1", 20)
    assert server.stop() == 0
    lines = calls()
    assert lines[:6] == [
        "on_starting True Config", "nworkers_changed 1 None", "pre_fork 1 True",
        "post_fork True 1", "post_worker_init True True", f"when_ready {server.master_pid} 1",
    ]
    assert "pre_request GET /hello" in lines
    assert "post_request /hello 200 /hello" in lines
    assert lines.index("pre_request GET /hello") < lines.index("post_request /hello 200 /hello")
    assert "nworkers_changed 2 1" in lines
    assert f"on_reload {server.master_pid}" in lines
    # HUP re-read the config, so the reload went back to its one worker; every
    # worker that ran (the first, the TTIN one, the reloaded one) exits through both hooks
    assert "nworkers_changed 1 2" in lines
    assert names(lines).count("worker_exit") == 3
    assert lines.count("child_exit True True") == 3
    assert lines[-1] == "on_exit True"


def test_int_abort_and_exec_hooks(test_app, recorder):
    conf, env, calls = recorder
    server = test_app("basic:sleepy", workers=1, timeout=2, config=str(conf), env=env)
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/?30", timeout=15)
    assert wait_until(lambda: "worker_abort True" in calls(), 10)
    server.wait_workers(1)
    server.send_signal(signal.SIGUSR2)
    match = server.wait_for_log(r"Upgrade: this master \((\d+)\)", timeout=20)
    new_master = int(match.group(1))
    try:
        assert "pre_exec True" in calls()
    finally:
        os.kill(new_master, signal.SIGQUIT)
        assert wait_until(lambda: not os.path.exists(f"/proc/{new_master}/status") or
                          "zombie" in open(f"/proc/{new_master}/status").read(), 10)
    assert server.stop(signal.SIGINT) == 0
    assert "worker_int True" in calls()


def test_a_failing_hook_is_logged_and_the_server_lives(test_app, tmp_path):
    conf = tmp_path / "bad.conf.py"
    conf.write_text(
        "def pre_request(worker, req):\n"
        "    raise ValueError('hook trouble')\n"
        "def when_ready(server):\n"
        "    raise RuntimeError('ready trouble')\n"
    )
    server = test_app("basic:hello", config=str(conf))
    assert requests.get(server.url).text == "hello"
    server.wait_for_log(r"the when_ready hook raised an exception(?s:.*)RuntimeError: ready trouble")
    server.wait_for_log(r"the pre_request hook raised an exception(?s:.*)ValueError: hook trouble")


def test_hook_with_wrong_signature_is_a_config_error(tmp_path):
    from conftest import APPS
    from test_server import run_prefork

    conf = tmp_path / "sig.conf.py"
    conf.write_text("def post_fork(server):\n    pass\n")
    code, out = run_prefork(["-c", str(conf), "basic:hello"], cwd=APPS)
    assert code == 2
    assert f"{conf}:1: post_fork: 'post_fork' must accept 2 positional arguments" in out
