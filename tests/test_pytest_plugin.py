"""The pytest plugin in real test suites: shared servers, zero-code configuration,
coverage from the workers, pytest-xdist and the server's log in failure reports.

Most tests here write a small project into tmp_path and run pytest on it in a
subprocess, as a user would, then read its output and files."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest
import requests
from conftest import APPS, ROOT, alive

from prefork.testing import ServerError, ServerPool, log_tail

# Every sample project talks to its servers through this, with a deadline.
SAMPLE_CONFTEST_HELPERS = '''
import urllib.request


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()
'''

SAMPLE_APP = '''
import os
import sys
import time


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def goodbye(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"goodbye"]


def noisy(environ, start_response):
    """Log ?N numbered lines to the server's log, then answer."""
    tag = environ.get("PATH_INFO", "/").strip("/") or "request"
    for i in range(int(environ.get("QUERY_STRING") or "1")):
        print(f"{tag} line {i}", file=sys.stderr, flush=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"logged"]


def measured(environ, start_response):
    if environ["PATH_INFO"] == "/stuck":
        print("stuck", file=sys.stderr, flush=True)  # STUCK-ONLY
        time.sleep(30)
    body = b"served over HTTP"  # HTTP-ONLY
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def pid(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
'''


def write_project(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


def inner_env(**extra):
    """The environment of a pytest run inside a test: nothing of ours leaks in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "COV_CORE_", "COVERAGE_"))}
    env.update(extra)
    return env


def run_pytest(project, *args, env=None, timeout=180):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=project, capture_output=True, text=True, timeout=timeout,
        env=env or inner_env(),
    )
    proc.output = proc.stdout + proc.stderr
    return proc


# --- shared servers, in this process


def test_a_pool_starts_one_server_per_argument_set_and_stops_them_at_close():
    with ServerPool("session") as pool:
        first = pool("basic:hello", cwd=APPS)
        again = pool("basic:hello", cwd=APPS)
        other = pool("basic:hello", 2, cwd=APPS)
        assert again is first
        assert other is not first and len(other.worker_pids()) == 2
        assert requests.get(first.url).text == "hello"
        masters = [first.master_pid, other.master_pid]
    assert not any(alive(pid) for pid in masters)


def test_a_pool_reports_a_dead_server_instead_of_starting_another():
    with ServerPool("module") as pool:
        server = pool("basic:hello", cwd=APPS)
        server.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        with pytest.raises(ServerError) as raised:
            pool("basic:hello", cwd=APPS)
        message = str(raised.value)
        assert f"master pid {server.master_pid}, shared by the module" in message
        assert "been killed by SIGKILL" in message
        assert "Listening at" in message  # the end of its log comes along
        assert pool.servers == [server]  # nothing was restarted


def test_the_log_tail_marks_where_the_test_began(test_app):
    server = test_app("basic:hello")
    began = server.log_size()
    with open(server.log_path, "a") as log:
        log.write("during the test\n")
    tail = log_tail(server, 3, since=began).splitlines()
    assert len(tail) == 4 and "Ready" in tail[1]  # three lines of the log, and the marker
    assert tail[2:] == ["----- (the test began here) -----", "during the test"]
    assert log_tail(server, 1, since=began) == "during the test"
    whole = log_tail(server, 100, since=began).splitlines()  # fewer lines than asked for
    assert "Starting prefork" in whole[0] and whole[-2:] == tail[-2:]
    assert log_tail(server, 0) == ""


# --- shared servers in a real test suite

SHARED_SUITE = {
    "app.py": SAMPLE_APP,
    "conftest.py": SAMPLE_CONFTEST_HELPERS + '''
import pytest


@pytest.fixture(scope="session")
def api(prefork_session_server):
    return prefork_session_server("app:hello")


@pytest.fixture(scope="session")
def victim(prefork_session_server):
    return prefork_session_server("app:hello", workers=2)


def record(name, pid):
    with open(name, "a") as f:
        f.write(f"{pid}\\n")
''',
    "test_reuse.py": '''
from conftest import get, record


def test_one(api):
    assert get(api.url) == "hello"
    record("session.pids", api.master_pid)


def test_two(api):
    assert get(api.url) == "hello"
    record("session.pids", api.master_pid)


def test_three(api):
    assert get(api.url) == "hello"
    record("session.pids", api.master_pid)
''',
    "test_x_dead.py": '''
def test_kills_its_shared_server(victim):
    victim.proc.kill()
    victim.proc.wait(10)


def test_uses_the_dead_server(victim):
    raise AssertionError("must not run: its server is dead")


def test_another_shared_server_is_unaffected(api):
    assert api.proc.poll() is None
''',
    "test_y_module_a.py": '''
from conftest import get, record


def test_a1(prefork_module_server):
    server = prefork_module_server("app:pid")
    record("module_a.pids", server.master_pid)


def test_a2(prefork_module_server):
    server = prefork_module_server("app:pid")
    record("module_a.pids", server.master_pid)
''',
    "test_z_module_b.py": '''
import os

from conftest import record


def test_b1(prefork_module_server):
    server = prefork_module_server("app:pid")
    record("module_b.pids", server.master_pid)
    (previous,) = set(open("module_a.pids").read().split())
    assert server.master_pid != int(previous)
    try:
        os.kill(int(previous), 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError("the module-scoped server of test_y_module_a still runs")
''',
}


def test_shared_servers_in_a_suite_are_reused_stopped_and_checked(tmp_path):
    project = write_project(tmp_path, SHARED_SUITE)
    proc = run_pytest(project, "-p", "no:randomly")
    assert proc.returncode == 1, proc.output
    assert "8 passed, 1 error" in proc.output, proc.output
    pids = (project / "session.pids").read_text().split()
    assert len(pids) == 3 and len(set(pids)) == 1, pids  # three tests, one master
    assert len(set((project / "module_a.pids").read_text().split())) == 1
    assert "ERROR at setup of test_uses_the_dead_server" in proc.output
    assert "shared by the session) has been killed by SIGKILL" in proc.output
    assert "must not run" not in proc.output
    assert not alive(int(pids[0]))  # the session's server stopped with the session


# --- zero-code configuration

ZERO_CODE_SUITE = {
    "app.py": SAMPLE_APP,
    "pytest.ini": '''
[pytest]
prefork_app = app:hello
prefork_args = --workers 2 --timeout 10
''',
    "test_zero.py": '''
import os
import urllib.request


def test_the_url_serves_the_app(prefork_url):
    with urllib.request.urlopen(prefork_url + "/", timeout=10) as response:
        assert response.read().decode() == os.environ.get("EXPECT", "hello")


def test_the_args_apply(prefork_app_server):
    assert len(prefork_app_server.worker_pids()) == 2
    assert prefork_app_server.url.startswith("http://127.0.0.1:")
''',
}


def test_the_ini_option_gives_prefork_url_without_a_conftest(tmp_path):
    project = write_project(tmp_path, ZERO_CODE_SUITE)
    assert not (project / "conftest.py").exists()
    proc = run_pytest(project)
    assert proc.returncode == 0, proc.output
    assert "2 passed" in proc.output


def test_the_command_line_option_overrides_the_ini_option(tmp_path):
    project = write_project(tmp_path, ZERO_CODE_SUITE)
    proc = run_pytest(project, "--prefork-app", "app:goodbye", env=inner_env(EXPECT="goodbye"))
    assert proc.returncode == 0, proc.output
    assert "2 passed" in proc.output


def test_prefork_url_without_an_app_is_a_clear_error(tmp_path):
    project = write_project(tmp_path, {**ZERO_CODE_SUITE, "pytest.ini": "[pytest]\n"})
    proc = run_pytest(project)
    assert proc.returncode == 1, proc.output
    assert "2 errors" in proc.output
    assert "prefork_url needs an application: set prefork_app" in proc.output


def test_a_bad_log_lines_option_is_a_usage_error(tmp_path):
    project = write_project(tmp_path, {**ZERO_CODE_SUITE, "pytest.ini": "[pytest]\nprefork_log_lines = many\n"})
    proc = run_pytest(project)
    assert proc.returncode == 4, proc.output
    assert "prefork_log_lines must be a whole number >= 0, not 'many'" in proc.output


# --- coverage from the workers

COVERAGE_SUITE = {
    "app.py": SAMPLE_APP,
    "pytest.ini": '''
[pytest]
prefork_app = app:measured
prefork_args = --timeout 1
''',
    "test_measured.py": '''
import urllib.error
import urllib.request

import pytest


def test_a_request(prefork_url):
    with urllib.request.urlopen(prefork_url + "/", timeout=10) as response:
        assert response.read() == b"served over HTTP"


def test_a_request_whose_worker_is_aborted(prefork_url, prefork_app_server):
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(prefork_url + "/stuck", timeout=20)
    prefork_app_server.wait_for_log("WORKER TIMEOUT", 10)


def test_a_server_kept_out_of_the_measurement(prefork_server):
    server = prefork_server("app:goodbye", measure_coverage=False)
    with urllib.request.urlopen(server.url, timeout=10) as response:
        assert response.read() == b"goodbye"
''',
}


def line_of(source, marker):
    return next(n for n, line in enumerate(source.splitlines(), 1) if marker in line)


@pytest.mark.parametrize("runner", ["pytest-cov", "coverage run"])
def test_a_line_reached_only_over_http_is_covered(tmp_path, runner):
    project = write_project(tmp_path, COVERAGE_SUITE)
    if runner == "pytest-cov":
        proc = run_pytest(project, "--cov=app", "--cov-report=json:cov.json")
    else:
        (project / ".coveragerc").write_text("[run]\nsource = app\nparallel = true\n")
        proc = subprocess.run(
            [sys.executable, "-m", "coverage", "run", "-m", "pytest", "-p", "no:cacheprovider", "-q"],
            cwd=project, capture_output=True, text=True, timeout=180, env=inner_env(),
        )
        proc.output = proc.stdout + proc.stderr
        for command in (["combine"], ["json", "-o", "cov.json"]):
            subprocess.run([sys.executable, "-m", "coverage", *command], cwd=project,
                           capture_output=True, timeout=60, env=inner_env())
    assert proc.returncode == 0, proc.output
    assert "3 passed" in proc.output
    source = (project / "app.py").read_text()
    report = project / "cov.json"
    assert report.exists(), "no coverage data: the server saved none\n" + proc.output
    executed = json.loads(report.read_text())["files"]["app.py"]["executed_lines"]
    assert line_of(source, "HTTP-ONLY") in executed  # served by a worker that stopped gracefully
    assert line_of(source, "STUCK-ONLY") in executed  # run by a worker aborted on its timeout
    assert line_of(source, 'b"goodbye"') not in executed  # served with measure_coverage=False


def test_no_coverage_in_this_process_means_a_plain_server(test_app):
    coverage = sys.modules.get("coverage")
    if coverage is not None and coverage.Coverage.current() is not None:
        pytest.skip("this run measures coverage")
    server = test_app("basic:hello")
    assert server.proc.args[:3] == [sys.executable, "-m", "prefork"]
    with open(f"/proc/{server.master_pid}/environ", "rb") as f:
        assert b"COVERAGE_PROCESS_CONFIG=" not in f.read()


# --- pytest-xdist

XDIST_SUITE = {
    "app.py": SAMPLE_APP,
    "pytest.ini": "[pytest]\nprefork_app = app:hello\n",
    "test_parallel.py": '''
import os
import urllib.request

import pytest


@pytest.mark.parametrize("n", range(8))
def test_each_worker_has_its_server(n, prefork_url, prefork_app_server):
    with urllib.request.urlopen(prefork_url, timeout=10) as response:
        assert response.read() == b"hello"
    with open("seen.txt", "a") as f:
        f.write(f"{os.environ['PYTEST_XDIST_WORKER']} {prefork_app_server.master_pid}\\n")
''',
}


def test_pytest_xdist_workers_each_get_their_own_server(tmp_path):
    project = write_project(tmp_path, XDIST_SUITE)
    proc = run_pytest(project, "-n", "2")
    assert proc.returncode == 0, proc.output
    assert "8 passed" in proc.output
    seen = {}
    for line in (project / "seen.txt").read_text().splitlines():
        worker, master = line.split()
        seen.setdefault(worker, set()).add(master)
    assert all(len(masters) == 1 for masters in seen.values()), seen  # one server per worker
    masters = set().union(*seen.values())
    assert len(masters) == len(seen), seen  # no two workers share one
    assert len(seen) == 2, seen


# --- the server's log in failure reports

FAILING_SUITE = {
    "app.py": SAMPLE_APP,
    "pytest.ini": "[pytest]\nprefork_log_lines = 5\n",
    "conftest.py": SAMPLE_CONFTEST_HELPERS,
    "test_failing.py": '''
from conftest import get


def test_fails_with_its_own_server(prefork_server):
    server = prefork_server("app:noisy")
    get(server.url + "/own?30")
    assert False, "deliberate failure"


def test_passes(prefork_server):
    server = prefork_server("app:noisy")
    get(server.url + "/quiet?3")


def test_shared_first(prefork_session_server):
    get(prefork_session_server("app:noisy").url + "/earlier?10")


def test_shared_second_fails(prefork_session_server):
    get(prefork_session_server("app:noisy").url + "/later?2")
    assert False, "deliberate failure"
''',
}


def test_a_failed_test_reports_its_servers_log(tmp_path):
    project = write_project(tmp_path, FAILING_SUITE)
    proc = run_pytest(project)
    assert proc.returncode == 1, proc.output
    assert "2 failed, 2 passed" in proc.output
    out = proc.stdout
    headers = [line for line in out.splitlines() if "prefork server log: app:noisy" in line]
    assert len(headers) == 2, out  # the passing tests get none
    assert "last 5 lines" in headers[0]
    own = out[out.index(headers[0]):out.index(headers[1])]
    assert [f"own line {i}" in own for i in (24, 25, 29)] == [False, True, True], own
    shared = out[out.index(headers[1]):]
    assert shared.index("earlier line 9") < shared.index("(the test began here)") \
        < shared.index("later line 0") < shared.index("later line 1"), shared
    assert "earlier line 6" not in shared
    assert "quiet line" not in out


# --- the examples in docs/testing.md, run as written


def doc_samples():
    """{project: {path: source}} from the ``<!-- sample: PROJECT/PATH -->`` blocks."""
    text = open(os.path.join(ROOT, "docs", "testing.md")).read()
    projects = {}
    for name, source in re.findall(r"<!-- sample: (\S+) -->\n```\w*\n(.*?)```", text, re.S):
        project, _, path = name.partition("/")
        projects.setdefault(project, {})[path] = source
    myapp = re.search(r"<!-- example: myapp.py -->\n```python\n(.*?)```", text, re.S).group(1)
    return projects, myapp


def test_the_docs_have_each_sample_project():
    projects, _ = doc_samples()
    assert set(projects) == {"shared", "zero-code", "flask-factory", "django"}


@pytest.mark.parametrize("project", ["shared", "zero-code", "flask-factory", "django"])
def test_a_sample_project_from_the_docs_passes(tmp_path, project):
    projects, myapp = doc_samples()
    files = {"myapp.py": myapp, **projects[project]}
    for path, source in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(source)
    tests = sum(source.count("\ndef test_") + source.startswith("def test_")
                for path, source in files.items() if os.path.basename(path).startswith("test_"))
    proc = run_pytest(tmp_path)
    assert proc.returncode == 0, proc.output
    assert f"{tests} passed" in proc.output, proc.output
