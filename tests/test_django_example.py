"""examples/django/ under the real server, and docs/django.md as written: the
files it shows are the example's, and the test it shows passes."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import requests
from conftest import ROOT

pytest.importorskip("django")
pytest.importorskip("whitenoise")

SITE = os.path.join(ROOT, "examples", "django")
DOC = os.path.join(ROOT, "docs", "django.md")
APP = "mysite.wsgi:application"


def doc_text():
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def site_env(static_root, **extra):
    env = {**os.environ, "DJANGO_STATIC_ROOT": str(static_root), **extra}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


@pytest.fixture(scope="module")
def static_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("staticfiles")
    proc = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"], cwd=SITE,
                          env=site_env(root), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def test_doc_shows_the_example_files_verbatim():
    shown = dict(re.findall(r"<!-- file: (\S+) -->\n```[a-z]*\n(.*?)```", doc_text(), re.S))
    assert set(shown) == {"examples/django/nginx.conf", "examples/django/prefork.conf.py",
                          "examples/django/mysite.service"}
    for path, text in shown.items():
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            assert f.read() == text, f"docs/django.md and {path} differ: edit both"


def test_config_file_site_serves_admin_and_static_files(prefork_server, static_root):
    """Started in the directory of manage.py, prefork reads the example's
    prefork.conf.py: the app, --preload and the pre_fork hook."""
    server = prefork_server(APP, workers=2, cwd=SITE, env=site_env(static_root))
    login = requests.get(server.url + "/admin/login/")
    assert login.status_code == 200
    assert "csrfmiddlewaretoken" in login.text and "Django administration" in login.text
    # the admin itself redirects an anonymous user to the login page
    admin = requests.get(server.url + "/admin/", allow_redirects=False)
    assert admin.status_code == 302 and admin.headers["Location"].startswith("/admin/login/")
    with open(os.path.join(SITE, "mysite", "static", "mysite", "site.css"), "rb") as f:
        source = f.read()
    whole = requests.get(server.url + "/static/mysite/site.css")
    assert whole.status_code == 200 and whole.content == source
    part = requests.get(server.url + "/static/mysite/site.css",
                        headers={"Range": "bytes=5-14", "Accept-Encoding": "identity"})
    assert part.status_code == 206
    assert part.content == source[5:15]
    assert part.headers["Content-Range"] == f"bytes 5-14/{len(source)}"
    log = server.log_text()
    assert "Traceback" not in log and "[ERROR]" not in log, log


def test_chdir_site_serves_hashed_static_files(prefork_server, static_root, tmp_path):
    """Started elsewhere with --chdir (no config file there: the app from the
    command line); the hashed names collectstatic wrote are cached for ever."""
    server = prefork_server(APP, workers=1, cwd=str(tmp_path), chdir=SITE, env=site_env(static_root))
    assert requests.get(server.url + "/admin/login/").status_code == 200
    with open(os.path.join(static_root, "staticfiles.json")) as f:
        hashed = json.load(f)["paths"]["mysite/site.css"]
    response = requests.get(server.url + "/static/" + hashed)
    assert response.status_code == 200
    assert "immutable" in response.headers["Cache-Control"]
    admin_css = requests.get(server.url + "/static/admin/css/base.css", headers={"Accept-Encoding": "gzip"})
    assert admin_css.status_code == 200 and admin_css.headers.get("Content-Encoding") == "gzip"


def test_allowed_hosts_refuses_other_host_names(prefork_server, static_root):
    server = prefork_server(APP, cwd=SITE, env=site_env(static_root, DJANGO_ALLOWED_HOSTS="www.example.com"))
    assert requests.get(server.url + "/admin/login/").status_code == 400
    assert requests.get(server.url + "/admin/login/", headers={"Host": "www.example.com"}).status_code == 200


def test_the_doc_test_passes_in_a_copy_of_the_site(tmp_path):
    """A user's project: the example site plus the test docs/django.md shows,
    run with pytest, the prefork_server fixture coming from the installed plugin."""
    tests = dict(re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", doc_text(), re.S))
    assert set(tests) == {"tests/test_site.py"}
    site = tmp_path / "mysite"
    shutil.copytree(SITE, site, ignore=shutil.ignore_patterns("__pycache__", "staticfiles", "*.sqlite3"))
    (site / "tests").mkdir()
    (site / "tests" / "test_site.py").write_text(tests["tests/test_site.py"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=site, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout


def _nginx():
    return shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")


@pytest.mark.skipif(not _nginx(), reason="needs nginx")
def test_nginx_block_is_accepted_by_nginx(tmp_path):
    with open(os.path.join(SITE, "nginx.conf")) as f:
        conf = f.read()
    (tmp_path / "site.conf").write_text(conf.replace("listen 80;", "listen 127.0.0.1:80;"))
    temp = " ".join(f"{name}_temp_path {tmp_path};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  {temp}\n  include {tmp_path}/site.conf;\n}}\n")
    proc = subprocess.run([_nginx(), "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "[warn]" not in proc.stderr and "[emerg]" not in proc.stderr, proc.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_systemd_unit_verifies(tmp_path):
    with open(os.path.join(SITE, "mysite.service")) as f:
        text = f.read()
    # the paths that only exist on the server
    text = text.replace("/srv/mysite/.venv/bin/prefork", shutil.which("true"))
    (tmp_path / "mysite.service").write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "mysite.service")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stdout + proc.stderr
