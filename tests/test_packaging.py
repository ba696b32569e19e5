"""Installing prefork as the docs say: the install instructions, the container
image and the Kubernetes Deployment. (The built wheel itself is checked by
scripts/check_package.sh, which .ci/run calls.)

No image can be built here (no registry to pull the base image from), so the
Dockerfile is checked for what would break a build or a running container:
every file it copies exists where the build contexts put it, the two stages
are wired together, the app it names imports, and prefork is PID 1."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT

EXAMPLES = os.path.join(ROOT, "examples")


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def instructions(text):
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(text):
    """The instructions of each stage, in order."""
    found = []
    for word, rest in instructions(text):
        if word == "FROM":
            found.append([])
        found[-1].append((word, rest))
    return found


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_install_docs_say_prefork_is_not_on_the_index(page):
    text = read(page)
    assert re.search(r"not on the Python package index \(PyPI\) yet", text)
    assert "pip install ." in text
    assert "python -m build" in text and "dist/prefork-*.whl" in text
    assert "git+https://" in text
    commands = [line.strip() for block in re.findall(r"```\n(.*?)```", text, re.S)
                for line in block.splitlines()]
    assert not [c for c in commands if re.match(r"pip install '?prefork(\[[a-z,]*\])?'?($|\s+#)", c)]


def test_dockerfile_builds_the_wheel_in_a_first_stage():
    build, runtime = stages(read("examples", "Dockerfile"))
    assert build[0] == ("FROM", "python:3.12-slim AS wheels")
    copies = [shlex.split(rest) for word, rest in build if word == "COPY"]
    from_prefork = [args[1:-1] for args in copies if args[0] == "--from=prefork"]
    # the named context "prefork" is the checkout: the files it copies exist there
    for sources in from_prefork:
        for source in sources:
            assert os.path.exists(os.path.join(ROOT, source)), source
    assert {"pyproject.toml", "README.md", "prefork/"} <= {s for group in from_prefork for s in group}
    assert any("pip wheel" in rest and "--wheel-dir /wheels" in rest for word, rest in build if word == "RUN")
    assert runtime[0] == ("FROM", "python:3.12-slim")
    install = [rest for word, rest in runtime if word == "RUN" and "pip install" in rest]
    assert install and "from=wheels" in install[0] and "--no-index" in install[0]
    assert not [rest for word, rest in runtime if word == "COPY" and "--from" in rest], \
        "the runtime stage mounts the wheels; copying them would leave them in a layer"


def test_dockerfile_runs_prefork_as_pid_1_as_a_non_root_user():
    _, runtime = stages(read("examples", "Dockerfile"))
    final = dict(runtime)
    entrypoint = json.loads(final["ENTRYPOINT"])  # the exec form: a JSON array
    command = json.loads(final["CMD"])
    assert entrypoint[0] == "prefork"
    assert final["USER"] not in ("root", "0")
    argv = entrypoint + command
    assert "--access-logfile" in argv and "--graceful-timeout" in argv


def test_dockerfile_example_app_loads_from_the_example_context():
    """The build context of the in-repository example is examples/: its
    requirements.txt exists and the CMD's app imports from there."""
    assert os.path.isfile(os.path.join(EXAMPLES, "requirements.txt"))
    _, runtime = stages(read("examples", "Dockerfile"))
    app = json.loads(dict(runtime)["CMD"])[-1]
    proc = subprocess.run([sys.executable, "-m", "prefork", "--check-config", app],
                          cwd=EXAMPLES, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def dockerignore_patterns():
    lines = read("examples", ".dockerignore").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def pattern_regex(pattern):
    """A .dockerignore pattern as a regex: ``**`` is any number of directories,
    ``*`` and ``?`` stay within one path component."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignored(path):
    """Whether the .dockerignore excludes ``path``: a pattern that matches the
    path or one of its directories excludes it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i + 1]) for i in range(len(parts))]
    return any(pattern_regex(p).fullmatch(prefix) for p in dockerignore_patterns() for prefix in prefixes)


@pytest.mark.parametrize("path", [".git/HEAD", ".venv/bin/python", "pkg/__pycache__/m.cpython-312.pyc",
                                  "pkg/mod.pyc", "prefork.egg-info/PKG-INFO", "dist/x.whl", "site/index.html"])
def test_dockerignore_keeps_local_clutter_out(path):
    assert ignored(path)


@pytest.mark.parametrize("path", ["requirements.txt", "hello_flask.py", "myproject/wsgi.py",
                                  "myproject/static/app.css"])
def test_dockerignore_keeps_the_application(path):
    assert not ignored(path)


def test_deployment_mounts_an_empty_dir_on_tmp():
    yaml = pytest.importorskip("yaml")
    text = read("docs", "deploy", "kubernetes.md")
    block = re.search(r"## A Deployment\n\n```yaml\n(.*?)```", text, re.S).group(1)
    spec = yaml.safe_load(block)["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
