"""An unusable --worker-tmp-dir stops the server at start, and fails
--check-config, with one line: the master never stays up with its port bound
and no worker (real servers; a real read-only directory, a real full tmpfs)."""

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest
from conftest import APPS


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nothing_listens(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def run(args, wrapper=(), timeout=20):
    """Run prefork to its end (it must not stay up); kill its group on a timeout."""
    proc = subprocess.Popen([*wrapper, sys.executable, "-m", "prefork", *args], cwd=APPS,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)
    return proc.returncode, out, err


def check_refused(tmp_dir, wrapper=(), reason=""):
    """Both a start and --check-config end at once with status 1 and one line."""
    port = free_port()
    code, out, err = run(["-b", f"127.0.0.1:{port}", "--worker-tmp-dir", tmp_dir, "basic:hello"],
                         wrapper)
    errors = [line for line in err.splitlines() if "[ERROR]" in line]
    assert code == 1, err
    assert len(errors) == 1, err
    assert f"--worker-tmp-dir {tmp_dir} cannot hold the workers' heartbeat files: {reason}" \
        in errors[0]
    assert "Traceback" not in err and "Listening at" not in err and "Cannot start a worker" not in err
    assert nothing_listens(port)

    code, out, err = run(["--check-config", "--worker-tmp-dir", tmp_dir, "basic:hello"],
                         wrapper)
    assert code == 1
    assert err.strip().splitlines() == [
        f"prefork: error: --worker-tmp-dir {tmp_dir} cannot hold the workers' heartbeat "
        f"files: {reason}"]
    assert "configuration OK" not in out


def test_proc_is_refused():
    check_refused("/proc", reason="No such file or directory")


def test_a_read_only_directory_is_refused(tmp_path):
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    wrapper = []
    if os.geteuid() == 0:  # root writes anywhere: run the server without that privilege
        if not shutil.which("setpriv"):
            pytest.skip("as root, needs setpriv to drop CAP_DAC_OVERRIDE")
        wrapper = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    check_refused(str(readonly), wrapper=wrapper, reason="Permission denied")


def _tmpfs_wrapper(options, directory):
    """A command that mounts a private tmpfs on ``directory``, then runs the rest."""
    return ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o {options} tmpfs "$0" && exec "$@"',
            str(directory)]


@pytest.fixture
def mountable(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a private tmpfs")
    probe = subprocess.run([*_tmpfs_wrapper("size=64k", tmp_path), "true"], capture_output=True,
                           timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    return tmp_path


def test_a_full_filesystem_is_refused(mountable):
    full = mountable / "full"
    full.mkdir()
    # One page: smaller than one heartbeat file.
    check_refused(str(full), wrapper=_tmpfs_wrapper("size=4k", full), reason="No space left on device")


def test_a_read_only_mount_is_refused(mountable):
    readonly = mountable / "ro"
    readonly.mkdir()
    check_refused(str(readonly), wrapper=_tmpfs_wrapper("ro", readonly),
                  reason="Read-only file system")


def test_a_missing_directory_is_a_bad_setting():
    code, out, err = run(["--worker-tmp-dir", "/no/such/dir", "basic:hello"])
    assert (code, err.strip()) == (2, "prefork: error: --worker-tmp-dir: no such directory: /no/such/dir")
    code, out, err = run(["--check-config", "--worker-tmp-dir", "/no/such/dir", "basic:hello"])
    assert (code, err.strip()) == (2, "prefork: error: --worker-tmp-dir: no such directory: /no/such/dir")


def test_a_usable_directory_passes_check_config(tmp_path):
    code, out, err = run(["--check-config", "--worker-tmp-dir", str(tmp_path), "basic:hello"])
    assert code == 0, err
    assert "configuration OK" in out
