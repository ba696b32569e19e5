"""The documentation site: a strict MkDocs build (every internal link and
anchor resolves), search that finds every setting, generated pictures that
are current, and every page rendered in headless Chromium with its images."""

import html
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import ROOT

from prefork.settings import SETTINGS

pytest.importorskip("mkdocs")
pytest.importorskip("material")


def _script(name, path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, *path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def mkdocs_build(config, site_dir):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    # not -q: it hides the warnings from the count that --strict fails on
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "--site-dir", str(site_dir)], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = mkdocs_build(os.path.join(ROOT, "mkdocs.yml"), out)
    assert proc.returncode == 0, "mkdocs build --strict failed:\n" + proc.stdout + proc.stderr
    return out


def test_every_page_is_in_the_site(site):
    pages = [os.path.splitext(os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "docs")))[0]
             for d, _, files in os.walk(os.path.join(ROOT, "docs")) for f in files if f.endswith(".md")]
    for page in pages:
        built = "index.html" if page == "index" else os.path.join(page, "index.html")
        assert (site / built).is_file(), f"docs/{page}.md was not built"


def test_strict_build_fails_on_a_broken_anchor_or_link(tmp_path):
    """The real mkdocs.yml's checks, on a two-page site with one bad anchor and
    one link to a page that does not exist."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the flag](other.md#no-such-heading) and [gone](gone.md).\n")
    (docs / "other.md").write_text("# Other\n\n## `--preload`\n\nText.\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {os.path.join(ROOT, 'mkdocs.yml')}\ndocs_dir: docs\n"
                      "nav:\n  - index.md\n  - other.md\n")
    proc = mkdocs_build(config, tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-heading" in proc.stdout + proc.stderr
    assert "gone.md" in proc.stdout + proc.stderr
    # GitHub's anchor for a heading that is a flag works on the site too
    (docs / "index.md").write_text("# Home\n\nSee [the flag](other.md#--preload).\n")
    proc = mkdocs_build(config, tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _words(text, separator):
    text = html.unescape(re.sub(r"<[^>]+>", " ", text)).lower()
    return {w for w in re.split(separator, text) if w}


def test_search_finds_every_setting_by_flag_and_config_name(site):
    """Each setting has its own entry in the search index (its section of
    settings.md) whose words include its config name and every word of each
    of its flags, split the way the site's search splits a query."""
    index = json.loads((site / "search" / "search_index.json").read_text())
    separator = index["config"]["separator"]
    entries = {e["location"]: e for e in index["docs"]}
    for setting in SETTINGS:
        entry = entries.get(f"settings/#{setting.name}")
        assert entry is not None, f"no search entry for setting {setting.name}"
        words = _words(entry["title"] + " " + entry["text"], separator)
        assert setting.name in words, setting.name
        for flag in setting.flags:
            assert _words(flag, separator) <= words, (setting.name, flag)
            assert flag in html.unescape(entry["text"]), (setting.name, flag)


def test_architecture_picture_is_current_and_valid():
    gen = _script("gen_architecture", ("scripts", "gen_architecture.py"))
    with open(gen.OUT, encoding="utf-8") as f:
        committed = f.read()
    assert committed == gen.render(), "docs/images/architecture.svg is stale: run python scripts/gen_architecture.py"
    root = ET.fromstring(committed)
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for word in ("master", "worker 1", "scoreboard", "listening", "signals", "fork"):
        assert word in texts


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def test_plots_are_drawn_by_the_bench_script(tmp_path):
    pytest.importorskip("matplotlib")
    plots = _script("bench_plots", ("bench", "plots.py"))
    written = plots.write_plots(plots.DEFAULT_JSON, str(tmp_path))
    names = sorted(os.path.basename(p) for p in written)
    assert names == ["perf-p99.png", "perf-throughput.png"]
    page = open(os.path.join(ROOT, "docs", "performance.md"), encoding="utf-8").read()
    for name in names:
        committed = os.path.join(ROOT, "docs", "images", name)
        assert f"](images/{name})" in page
        # the same layout as what the script draws now (pixels may differ
        # between matplotlib and font versions; the size does not)
        assert _png_size(committed) == _png_size(tmp_path / name)


def test_published_json_matches_the_tables():
    """The plot input transcribes docs/performance.md: spot-check it there."""
    with open(os.path.join(ROOT, "bench", "results", "published.json"), encoding="utf-8") as f:
        data = json.load(f)
    page = open(os.path.join(ROOT, "docs", "performance.md"), encoding="utf-8").read()
    for name, scenario in data["scenarios"].items():
        for server, s in scenario["summary"].items():
            row = f"| {server} | {s['rps']:,} ({s['rps_min']:,}–{s['rps_max']:,}) | **{s['rps_ratio']:.2f}×** | " \
                  f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f} |"
            assert row in page, (name, server)


@pytest.fixture(scope="module")
def chromium():
    check = _script("check_site", ("scripts", "check_site.py"))
    path = check.find_chromium()
    if path is None:
        pytest.skip("needs chromium (Debian: apt-get install chromium; .ci/run installs it)")
    return check, path


def test_search_in_the_browser_finds_every_setting_by_flag_and_name(site, chromium):
    """The site's own search engine, queried as its search box does: each
    config name and each flag (-w, --keep-alive, ...) finds its setting."""
    check, path = chromium
    wanted = {}
    for setting in SETTINGS:
        for query in (setting.name, *setting.flags):
            wanted.setdefault(query, set()).add(f"settings/#{setting.name}")
    results = check.search(str(site), path, list(wanted))
    missing = {q: sorted(want - set(results[q])) for q, want in wanted.items() if not want <= set(results[q])}
    assert missing == {}
    # Why docs/javascripts/search-flags.js exists: without it a query that
    # starts with a dash means "without this word", and a flag finds nothing.
    raw = check.search(str(site), path, ["--keep-alive"], raw=True)
    assert "settings/#keepalive" not in raw["--keep-alive"]


def test_every_page_renders_and_every_image_loads(site, chromium):
    check, path = chromium
    results = check.check_pages(str(site), path)
    by_path = {r["path"]: r for r in results}
    # the checker notices a missing image (a page served only to it)
    assert "image did not load: /no-such-image.png" in check.problems(results)[check.BROKEN]
    real = [r for r in results if r["path"] != check.BROKEN]
    assert len(real) == len(check.site_pages(str(site))) >= 19
    assert check.problems(real) == {}
    assert [img["src"] for img in by_path["/"]["images"]] == ["images/architecture.svg"]
    assert len(by_path["/performance/"]["images"]) == 2
    assert by_path["/settings/"]["h1"].strip().startswith("Settings")
