"""The examples in the documentation run as written."""

import os
import re
import subprocess
import sys

from conftest import ROOT


def doc_examples(name):
    text = open(os.path.join(ROOT, "docs", name)).read()
    return dict(re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", text, re.S))


def test_testing_md_example_runs(tmp_path):
    files = doc_examples("testing.md")
    assert set(files) == {"myapp.py", "test_myapp.py"}
    for filename, source in files.items():
        (tmp_path / filename).write_text(source)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_myapp.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_readme_commands_are_what_ci_runs():
    readme = open(os.path.join(ROOT, "README.md")).read()
    example = re.search(r"<!-- ci: example command -->\n```\n(.*?)\n```", readme).group(1)
    assert "pip install '.[flask]'" in example
    assert "prefork examples.hello_flask:app" in example
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "ci: test command" in ci
