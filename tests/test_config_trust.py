"""Running as root, a config file found in the working directory is run only
if nobody but root could have written it; a file named with -c gets a warning
(real prefork processes; a config file that leaves a mark when it runs)."""

import os
import signal
import subprocess
import sys

import pytest
from conftest import APPS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the check applies when running as root")

NOBODY = 65534
CONFIG = "import pathlib\npathlib.Path('ran').write_text('yes')\nworkers = 1\n"


def prefork(*args, cwd, timeout=20):
    """Run prefork to its end; its process group is killed if it stays up."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFORK_CMD_ARGS", "GUNICORN_CMD_ARGS")}
    env["PYTHONPATH"] = APPS
    proc = subprocess.Popen([sys.executable, "-m", "prefork", *args], cwd=cwd, env=env,
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


def config(tmp_path, name, mode=0o644, uid=0):
    path = tmp_path / name
    path.write_text(CONFIG)
    os.chmod(path, mode)
    os.chown(path, uid, -1)
    return path


UNSAFE = [
    (0o644, NOBODY, "it is owned by nobody (uid 65534), not by root"),
    (0o664, 0, "it is writable by its group"),
    (0o646, 0, "it is writable by others"),
    (0o666, NOBODY, "it is owned by nobody (uid 65534), not by root, and "
                    "it is writable by its group and others"),
]


@pytest.mark.parametrize("name", ["prefork.conf.py", "gunicorn.conf.py"])
@pytest.mark.parametrize(("mode", "uid", "reason"), UNSAFE)
def test_an_unsafe_config_file_found_in_the_working_directory_is_refused(tmp_path, name, mode,
                                                                          uid, reason):
    path = config(tmp_path, name, mode, uid)
    expected = (f"prefork: error: refusing to run {path}, found in the current directory, as "
                f"root: {reason}; fix its owner or mode, or name it with -c")
    code, out, err = prefork("--check-config", "basic:hello", cwd=tmp_path)
    assert (code, err.strip()) == (2, expected)  # a bad setting: 2, as without --check-config
    code, out, err = prefork("-b", "127.0.0.1:0", "basic:hello", cwd=tmp_path)
    assert (code, err.strip()) == (2, expected)
    assert not (tmp_path / "ran").exists()  # never executed


def test_an_unsafe_config_file_named_with_c_runs_with_a_warning(tmp_path):
    path = config(tmp_path, "gunicorn.conf.py", 0o646)
    code, out, err = prefork("--check-config", "-c", "gunicorn.conf.py", "basic:hello",
                             cwd=tmp_path)
    assert code == 0, err
    assert err.strip() == (f"prefork: warning: {path}: running this config file as root "
                           "although it is writable by others")
    assert (tmp_path / "ran").exists()


def test_a_config_file_only_root_can_write_is_run_quietly(tmp_path):
    config(tmp_path, "prefork.conf.py", 0o644)
    code, out, err = prefork("--check-config", "basic:hello", cwd=tmp_path)
    assert (code, err) == (0, "")
    assert (tmp_path / "ran").exists()
