"""--reuse-port: a listening socket per worker, bound with SO_REUSEPORT to the
same address (real processes, real sockets, real signals; Linux only)."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from conftest import APPS, a_worker_sleeps, alive, term_during_request, unix_get, wait_until
from rawhttp import Conn, get

from prefork.testing import child_pids

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="--reuse-port spreads connections on Linux only")


def start(test_app, app="basic:pid", workers=2, bind="127.0.0.1:0", **settings):
    """A --reuse-port server on a fresh port (port 0: the master's reservation
    picks it, the workers listen on the same one); ``server.url`` is set."""
    server = test_app(app, workers=workers, bind=bind, reuse_port=True, **settings)
    match = server.wait_for_log(r"Listening at: (http://127\.0\.0\.1:\d+) \(\d+, [^)]*a socket per worker\)")
    server.url = match.group(1)
    return server


def listening_inodes(port):
    """Inodes of the TCP sockets in LISTEN state on ``port`` (from /proc/net/tcp)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "0A":
                inodes.add(inode)
    return inodes


def socket_inodes(pid):
    """Inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def pids_answering(url, count):
    """The worker pids that answered ``count`` requests, each on a new connection."""
    pids = set()
    for _ in range(count):
        response = requests.get(url, timeout=5, headers={"Connection": "close"})
        assert response.status_code == 200
        pids.add(int(response.text))
    return pids


def requests_until(url, done, timeout=20):
    """Send requests, each on a new connection, until ``done()``; the failures."""
    failures = []
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not done within {timeout} s"
        try:
            requests.get(url, timeout=5, headers={"Connection": "close"})
        except requests.RequestException as exc:
            failures.append(repr(exc))
    return failures


def test_each_worker_listens_on_its_own_socket(test_app):
    server = start(test_app, workers=2)
    workers = server.wait_workers(2)
    # The kernel spreads new connections by a hash of the client's port.
    assert pids_answering(server.url, 40) == set(workers)
    listening = listening_inodes(server.port)
    assert len(listening) == 2  # the master's socket is bound, not listening
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            migrate = f.read().strip()
    except OSError:
        migrate = ""
    # Queued connections are lost with their worker unless the kernel migrates them.
    assert ("tcp_migrate_req is not 1" in server.log_text()) == (migrate != "1")
    held = [socket_inodes(pid) & listening for pid in workers]
    assert all(len(inodes) == 1 for inodes in held), held
    assert held[0] != held[1]
    assert not socket_inodes(server.master_pid) & listening


def test_master_reservation_takes_no_connection(test_app):
    server = start(test_app, workers=2)
    for _ in range(100):  # none of them is queued on a socket nobody accepts from
        assert requests.get(server.url, timeout=5, headers={"Connection": "close"}).status_code == 200
    # With no worker, only the reservation holds the port: refused, not queued.
    server.send_signal(signal.SIGWINCH)
    server.wait_workers(0)
    with socket.socket() as probe:
        probe.settimeout(5)
        with pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", server.port))
    server.send_signal(signal.SIGHUP)  # workers again, on the same port
    server.wait_workers(2)
    assert wait_until(lambda: len(listening_inodes(server.port)) == 2, 5)
    assert requests.get(server.url, timeout=5).status_code == 200


def test_term_completes_the_request_in_flight(test_app):
    server = start(test_app, app="basic:sleepy", workers=2, graceful_timeout=10)
    response = term_during_request(server, 1.5)
    assert response.status_code == 200
    assert response.text == "slept 1.5"


def test_hup_reload_gives_new_workers_their_own_sockets(test_app):
    server = start(test_app, workers=2)
    old = server.wait_workers(2)
    server.send_signal(signal.SIGHUP)
    # New connections all through the hand-over: none refused or reset.
    failures = requests_until(
        server.url, lambda: not any(alive(pid) for pid in old) and "Reload complete" in server.log_text())
    assert failures == []
    new = server.wait_workers(2, exclude=old)
    assert wait_until(lambda: len(listening_inodes(server.port)) == 2, 5)
    assert pids_answering(server.url, 40) == set(new)


def test_killed_worker_is_replaced_and_the_port_keeps_serving(test_app):
    server = start(test_app, workers=2)
    victim, survivor = server.wait_workers(2)
    os.kill(victim, signal.SIGKILL)
    new = server.wait_workers(2, exclude=[victim])
    assert wait_until(lambda: len(listening_inodes(server.port)) == 2, 5)
    assert pids_answering(server.url, 40) == set(new)
    assert survivor in new


def test_max_requests_retirement_drops_no_request(test_app):
    server = start(test_app, workers=2, max_requests=5, max_requests_jitter=0)
    first = set(server.wait_workers(2))
    failures = []
    pids = set()
    for _ in range(50):
        try:
            response = requests.get(server.url, timeout=5, headers={"Connection": "close"})
            pids.add(int(response.text))
            if response.status_code != 200:
                failures.append(response.status_code)
        except requests.RequestException as exc:
            failures.append(repr(exc))
    assert failures == []
    assert len(pids - first) >= 2  # workers were retired and replaced along the way


def test_unix_socket_is_shared_with_a_warning(test_app, tmp_path):
    path = tmp_path / "app.sock"
    server = test_app("basic:pid", workers=2, bind=[f"unix:{path}", "127.0.0.1:0"], reuse_port=True)
    server.wait_for_log(r"WARNING\] --reuse-port does not apply to unix:%s \(a unix socket\): "
                        r"the workers share it" % path)
    assert server.log_text().count("--reuse-port does not apply") == 1
    assert unix_get(path).startswith(b"HTTP/1.1 200 OK")
    # The TCP address of the same server still gets a socket per worker.
    match = server.wait_for_log(r"Listening at: http://127\.0\.0\.1:(\d+) \(\d+, bound, a socket per worker\)")
    assert wait_until(lambda: len(listening_inodes(int(match.group(1)))) == 2, 5)


def test_fd_socket_is_shared_with_a_warning(test_app):
    # The fixture passes its own listening socket as fd://N.
    server = test_app("basic:pid", workers=2, reuse_port=True)
    server.wait_for_log(r"WARNING\] --reuse-port does not apply to http://127\.0\.0\.1:%d "
                        r"\(an fd:// socket, opened by another process\)" % server.port)
    assert "a socket per worker" not in server.log_text()
    assert requests.get(server.url, timeout=5).status_code == 200
    assert len(listening_inodes(server.port)) == 1


def test_usr2_upgrade_hands_the_reservation_over(test_app):
    port = _free_port()  # not 0: the new master must find the same address
    server = start(test_app, workers=2, bind=f"127.0.0.1:{port}", upgrade_auto=True)
    old = server.wait_workers(2)
    server.send_signal(signal.SIGUSR2)
    match = server.wait_for_log(r"Upgrade: this master \((\d+)\) replaces %d" % server.master_pid, timeout=20)
    new_master = int(match.group(1))
    try:
        server.wait_for_log(r"Listening at: http://127\.0\.0\.1:%d \(%d, inherited, a socket per worker\)"
                            % (port, new_master))
        # The old master retires its workers, then exits.
        failures = requests_until(server.url, lambda: server.proc.poll() is not None)
        assert server.proc.wait(20) == 0
        assert failures == []
        new = child_pids(new_master)
        assert len(new) == 2 and not set(new) & set(old)
        assert wait_until(lambda: len(listening_inodes(port)) == 2, 5)
        assert pids_answering(server.url, 40) == set(new)
    finally:
        os.kill(new_master, signal.SIGTERM)
        assert wait_until(lambda: not alive(new_master), 10)


def test_address_in_use_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "prefork", "--reuse-port", "-b", f"127.0.0.1:{port}",
                               "basic:hello"], cwd=APPS, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in errors[0]


def test_print_config_shows_reuse_port():
    proc = subprocess.run([sys.executable, "-m", "prefork", "--print-config", "--reuse-port", "basic:hello"],
                          cwd=APPS, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^reuse_port = True +# command line$", proc.stdout, re.M), proc.stdout
    check = subprocess.run([sys.executable, "-m", "prefork", "--check-config", "--reuse-port", "basic:hello"],
                           cwd=APPS, capture_output=True, text=True, timeout=20)
    assert check.returncode == 0 and "configuration OK" in check.stdout, check.stderr


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_changed_reuse_port_applies_on_usr2_not_on_hup(test_app, tmp_path):
    port = _free_port()
    conf = tmp_path / "prefork.conf.py"
    conf.write_text("reuse_port = True\n")
    server = test_app("basic:pid", workers=2, bind=f"127.0.0.1:{port}", upgrade_auto=True,
                      args=["-c", str(conf)])
    conf.write_text("reuse_port = False\n")
    server.send_signal(signal.SIGHUP)
    server.wait_for_log(r"Reload: a changed --reuse-port takes effect only on restart or USR2")
    server.wait_for_log(r"Reload complete")
    assert wait_until(lambda: len(listening_inodes(port)) == 2, 5)  # still one socket per worker
    # USR2: the new master gets the bound, not listening, socket.
    server.send_signal(signal.SIGUSR2)
    match = server.wait_for_log(r"Upgrade: this master \((\d+)\) replaces %d" % server.master_pid, timeout=20)
    new_master = int(match.group(1))
    try:
        # A socket of its own beside the inherited reservation, shared by its workers.
        server.wait_for_log(r"Listening at: http://127\.0\.0\.1:%d \(%d, bound\)" % (port, new_master))
        assert server.proc.wait(20) == 0
        assert wait_until(lambda: len(listening_inodes(port)) == 1, 5)  # shared again
        assert pids_answering(server.url, 20) <= set(child_pids(new_master))
    finally:
        os.kill(new_master, signal.SIGTERM)
        assert wait_until(lambda: not alive(new_master), 10)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_workers_listen_before_dropping_privileges(test_app):
    # The kernel lets a socket join an SO_REUSEPORT group only for the user
    # who owns the sockets already there: the master's, root here.
    import pwd

    nobody = pwd.getpwnam("nobody")
    server = start(test_app, workers=2, user="nobody")
    workers = server.wait_workers(2)
    for pid in workers:
        with open(f"/proc/{pid}/status") as f:
            uid_line = next(line for line in f if line.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
    assert pids_answering(server.url, 40) == set(workers)


def test_keep_alive_looks_at_the_workers_own_queue(test_app):
    # The master's reservation polls as "hung up" (POLLHUP) for ever: a worker
    # that looked at it would think someone waits and close every connection.
    server = start(test_app, app="http_apps:router", workers=1, keepalive=30)
    with Conn(server.port) as a:
        first = a.request(get("/hello"))
        assert first.body == b"hello" and first.header("Connection") != "close"
        assert a.request(get("/hello")).body == b"hello"  # the same connection, kept
        a.send(get("/sleep_briefly?s=0.5"))  # the worker is busy with a…
        assert wait_until(lambda: a_worker_sleeps(server), 5)
        with Conn(server.port) as b:  # …while b waits in its listen queue
            b.send(get("/hello"))
            assert a.read_response().header("Connection") == "close"
            assert b.read_response().body == b"hello"


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="needs systemd-socket-activate")
def test_socket_activation_is_shared_with_a_warning(test_app):
    port = _free_port()
    server = test_app(
        "basic:pid", workers=2, bind=f"127.0.0.1:{port}", reuse_port=True, wait_ready=False,
        wrapper=["systemd-socket-activate", "-E", "NOTIFY_SOCKET", "-l", f"127.0.0.1:{port}"],
    )
    # systemd-socket-activate execs prefork on the first connection, which is then
    # served; until it listens, connections are refused.
    assert wait_until(lambda: _get_or_none(server.url), 10).status_code == 200
    server.wait_notify("READY=1", 20)
    server.wait_for_log(r"WARNING\] --reuse-port does not apply to http://127\.0\.0\.1:%d "
                        r"\(passed by socket activation, already listening\)" % port)
    assert len(listening_inodes(port)) == 1
    assert pids_answering(server.url, 10)


def _get_or_none(url):
    try:
        return requests.get(url, timeout=20)
    except requests.ConnectionError:
        return None


FLAKY_APP = (
    "import os, time\n"
    "HERE = os.path.dirname(os.path.abspath(__file__))\n"
    "if os.path.exists(os.path.join(HERE, 'BROKEN')):\n"
    "    time.sleep(1)\n"
    "    raise RuntimeError('this version cannot load')\n"
    "def app(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [str(os.getpid()).encode()]\n"
)


def test_a_reload_that_cannot_load_loses_no_connection(prefork_server, tmp_path):
    # New workers listen only once the application has loaded: connections are
    # never queued on a worker that is loading, or that fails to and exits.
    (tmp_path / "flaky.py").write_text(FLAKY_APP)
    server = start(lambda app, workers, **kw: prefork_server(app, workers, cwd=str(tmp_path), **kw),
                   app="flaky:app", workers=2)
    old_workers = set(server.wait_workers(2))
    (tmp_path / "BROKEN").touch()
    server.send_signal(signal.SIGHUP)
    failures = requests_until(server.url, lambda: "Reload failed" in server.log_text(), timeout=30)
    assert failures == []
    assert pids_answering(server.url, 20) <= old_workers


def test_a_failed_upgrade_that_turns_reuse_port_off_leaves_no_stray_listener(prefork_server, tmp_path):
    # The new master listens on a socket of its own, never on the reservation it
    # shares with the old master: once it has failed, the old master is left
    # with no listening socket that nobody accepts from.
    port = _free_port()
    (tmp_path / "flaky.py").write_text(FLAKY_APP)
    conf = tmp_path / "prefork.conf.py"
    conf.write_text("reuse_port = True\n")
    server = prefork_server("flaky:app", 2, cwd=str(tmp_path), bind=f"127.0.0.1:{port}",
                            args=["-c", str(conf)])
    old_workers = set(server.wait_workers(2))
    conf.write_text("reuse_port = False\n")
    (tmp_path / "BROKEN").touch()
    server.send_signal(signal.SIGUSR2)
    server.wait_for_log("Upgrade failed", timeout=30)
    assert wait_until(lambda: len(listening_inodes(port)) == 2, 5)  # the old workers' own sockets
    assert pids_answering(f"http://127.0.0.1:{port}", 30) == old_workers
