"""The deployment examples in docs/deploy/ are the files under examples/, and they are valid."""

import glob
import os
import re
import shutil
import subprocess

import pytest
from conftest import ROOT

FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)```", re.S)


def shown_files():
    """(doc, path, text) of every example file a page under docs/deploy/ shows."""
    found = []
    for doc in sorted(glob.glob(os.path.join(ROOT, "docs", "deploy", "*.md"))):
        for path, text in FILE_BLOCK.findall(open(doc).read()):
            found.append((os.path.basename(doc), path, text))
    return found


def test_every_example_file_is_shown_somewhere():
    paths = {path for _, path, _ in shown_files()}
    assert {"examples/systemd/prefork.service", "examples/systemd/prefork.socket",
            "examples/Dockerfile", "examples/nginx/myapp.conf"} <= paths


@pytest.mark.parametrize("doc, path, text", shown_files(), ids=lambda v: v if isinstance(v, str) and "/" in v else "")
def test_docs_show_the_example_files_verbatim(doc, path, text):
    with open(os.path.join(ROOT, path)) as f:
        assert f.read() == text, f"{doc} and {path} differ: edit both"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_units_verify(tmp_path):
    """systemd-analyze verify has nothing to say about the example units (it would
    warn about unknown keys, bad values and missing dependencies)."""
    for name in ("prefork.service", "prefork.socket"):
        text = open(os.path.join(ROOT, "examples", "systemd", name)).read()
        # the one thing verify checks on this machine that only exists on yours
        text = text.replace("/srv/myapp/.venv/bin/prefork", shutil.which("true"))
        (tmp_path / name).write_text(text)
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "prefork.socket"), str(tmp_path / "prefork.service")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", proc.stdout + proc.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_verify_would_catch_a_mistake(tmp_path):
    """The check above is not blind: a misspelt key is reported."""
    text = open(os.path.join(ROOT, "examples", "systemd", "prefork.service")).read()
    text = text.replace("/srv/myapp/.venv/bin/prefork", shutil.which("true")).replace("KillMode=", "KilMode=")
    (tmp_path / "prefork.service").write_text(text)
    (tmp_path / "prefork.socket").write_text(open(os.path.join(ROOT, "examples", "systemd", "prefork.socket")).read())
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "prefork.socket"), str(tmp_path / "prefork.service")],
        capture_output=True, text=True, timeout=60,
    )
    assert "KilMode" in proc.stderr


def test_service_stop_timeout_covers_the_graceful_timeout():
    """TimeoutStopSec must leave prefork time to finish requests before SIGKILL."""
    text = open(os.path.join(ROOT, "examples", "systemd", "prefork.service")).read()
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1))
    execstart = re.search(r"^ExecStart=(.*)$", text, re.M).group(1)
    graceful = float(re.search(r"--graceful-timeout (\S+)", execstart).group(1))
    delay = re.search(r"--shutdown-delay (\S+)", execstart)
    assert stop >= graceful + (float(delay.group(1)) if delay else 0) + 5


def _nginx():
    return shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")


@pytest.mark.skipif(not _nginx(), reason="needs nginx")
def test_nginx_example_is_accepted_by_nginx(tmp_path):
    conf = open(os.path.join(ROOT, "examples", "nginx", "myapp.conf")).read()
    (tmp_path / "myapp.conf").write_text(conf)  # -t parses and checks; it binds nothing
    temp = " ".join(f"{name}_temp_path {tmp_path};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  {temp}\n  include {tmp_path}/myapp.conf;\n}}\n")
    proc = subprocess.run([_nginx(), "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "[warn]" not in proc.stderr and "[emerg]" not in proc.stderr, proc.stderr
