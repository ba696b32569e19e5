"""Load every page of the built docs site in headless Chromium.

    python scripts/check_site.py SITE_DIR                     # exit 1 if a page or image fails
    python scripts/check_site.py SITE_DIR --screenshots DIR   # also PNGs of a few pages, to look at

The site is served by Python's http.server on 127.0.0.1 (a fresh port) for
the duration of the check. One Chromium process loads a checking page that
holds every page of the site in an iframe; the browser's load event waits
for all of them and their images, and then a script reads each iframe's
document: it must have a title and an article with text, and every image
must have loaded with a size. The results come back in the dumped DOM.
A page with a missing image, served only to the checker, proves it notices.

``search()`` asks the site's search engine (Material's search worker, with
the site's index, driven over the DevTools protocol) for a list of queries.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import html
import http.server
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--hide-scrollbars", "--mute-audio"]
BROKEN = "/__broken__/"  # a page whose image is missing: the check must fail it
SCREENSHOTS = {"index": "/", "settings": "/settings/", "performance": "/performance/"}

CHECKER = """<!doctype html>
<html><head><meta charset="utf-8"><title>site check</title></head>
<body><pre id="result">pending</pre>
%(frames)s
<script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("iframe").forEach(function (frame) {
    var doc = frame.contentDocument, page = {path: frame.dataset.path};
    if (!doc || !doc.body) { page.error = "no document"; out.push(page); return; }
    var article = doc.querySelector("article") || doc.body;
    page.title = doc.title;
    page.h1 = (article.querySelector("h1") || {}).textContent || "";
    page.text = article.textContent.trim().length;
    page.images = Array.from(doc.images).map(function (img) {
      return {src: img.getAttribute("src"), ok: img.complete && img.naturalWidth > 0,
              width: img.naturalWidth};
    });
    out.push(page);
  });
  document.getElementById("result").textContent = JSON.stringify(out);
});
</script></body></html>
"""

BROKEN_PAGE = b"""<!doctype html><html><head><title>broken</title></head>
<body><article><h1>broken</h1><p>This page's image does not exist.</p>
<img src="/no-such-image.png" alt="missing"></article></body></html>"""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def site_pages(site: str) -> list[str]:
    """URL paths of every page of the built site (each is a DIR/index.html)."""
    pages = []
    for directory, _, files in os.walk(site):
        if "index.html" in files:
            rel = os.path.relpath(directory, site).replace(os.sep, "/")
            pages.append("/" if rel == "." else f"/{rel}/")
    return sorted(pages)


class _Handler(http.server.SimpleHTTPRequestHandler):
    checker = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        extra = {"/__check__.html": self.checker, BROKEN: BROKEN_PAGE}.get(self.path)
        if extra is None:
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(extra)))
        self.end_headers()
        self.wfile.write(extra)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(site: str, checker: bytes = b"") -> Iterator[str]:
    """Serve ``site`` on 127.0.0.1; yield its base URL."""
    handler = type("Handler", (_Handler,), {"checker": checker})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def run_chromium(chromium: str, args: Sequence[str], timeout: float) -> str:
    """Run Chromium with a fresh profile; its whole process group is killed
    if it outlives ``timeout``."""
    with tempfile.TemporaryDirectory(prefix="prefork-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
            raise
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # helpers left behind
        return out


class Browser:
    """Chromium driven over the DevTools protocol, on a pipe: the browser
    reads commands from its descriptor 3 and writes answers to 4, each
    message a JSON text ended by a NUL byte."""

    def __init__(self, chromium: str, profile: str) -> None:
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        # Copies numbered 10 or more, so that the shell below can move them to
        # 3 and 4 without clobbering one with the other (no preexec_fn: this
        # process has threads).
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
        r, w = ends
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{r} 4>&{w} {r}<&- {w}>&-', "bash", chromium, *CHROMIUM_FLAGS,
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=ends, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        for fd in (to_browser, from_browser, *ends):
            os.close(fd)
        self._buf = b""
        self._id = 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._in], [], [], left)[0]:
                    raise TimeoutError(f"no answer to {method} within {timeout} s")
                chunk = os.read(self._in, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium exited during {method}")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def open(self, url: str, timeout: float = 30) -> str:
        """A new tab that has loaded ``url``; returns its session id."""
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):  # the context changes while it navigates
                state = self.evaluate(session, "location.href + ' ' + document.readyState")
                if state == f"{url} complete":
                    return session
            time.sleep(0.05)
        raise TimeoutError(f"{url} did not load within {timeout} s")

    def evaluate(self, session: str, expression: str, timeout: float = 60) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session, timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        os.close(self._out)
        os.close(self._in)


@contextlib.contextmanager
def browser(chromium: str) -> Iterator[Browser]:
    with tempfile.TemporaryDirectory(prefix="prefork-chromium-") as profile:
        b = Browser(chromium, profile)
        try:
            yield b
        finally:
            b.close()


# Asks the site's own search engine, as the search box does: a worker made
# from Material's search script, set up with the site's index, is sent each
# query in the message Material's page sends (through the page's scripts, so
# the site's query fixes apply), and answers with the matching sections.
SEARCH = """(async (queries, raw) => {
  const config = JSON.parse(document.getElementById("__config").textContent);
  const index = await (await fetch(config.base + "/search/search_index.json")).json();
  const worker = new Worker(config.base + "/" + config.search);
  // raw: past the site's fixes, with the postMessage of a fresh realm
  const frame = document.body.appendChild(document.createElement("iframe"));
  const send = raw ? frame.contentWindow.Worker.prototype.postMessage : Worker.prototype.postMessage;
  const next = () => new Promise(done => worker.addEventListener("message", ev => done(ev.data), {once: true}));
  let answer = next();
  worker.postMessage({type: 0, data: {config: index.config, docs: index.docs, options: {suggest: false}}});
  if ((await answer).type !== 1) throw new Error("the search worker did not get ready");
  const out = {};
  for (const query of queries) {
    answer = next();
    send.call(worker, {type: 2, data: query});
    const result = await answer;
    out[query] = result.data.items.flat().map(item => item.location);
  }
  worker.terminate();
  return out;
})(%s, %s)"""


def search(site: str, chromium: str, queries: Sequence[str], raw: bool = False,
           timeout: float = 120) -> dict[str, list[str]]:
    """{query: [location of a matching section, best first]} from the site's
    own search engine in the browser; ``raw`` skips the site's query fixes."""
    with serve(site) as base, browser(chromium) as b:
        session = b.open(base + "/")
        return b.evaluate(session, SEARCH % (json.dumps(list(queries)), json.dumps(raw)), timeout)


def check_pages(site: str, chromium: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Every page of ``site`` plus the broken one, as the browser saw them."""
    paths = [*site_pages(site), BROKEN]
    frames = "\n".join(f'<iframe data-path="{html.escape(p)}" src="{html.escape(p)}" '
                       'width="1200" height="800"></iframe>' for p in paths)
    checker = (CHECKER % {"frames": frames}).encode()
    with serve(site, checker) as base:
        dom = run_chromium(chromium, ["--virtual-time-budget=20000", "--dump-dom",
                                      f"{base}/__check__.html"], timeout)
    match = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    if not match or match.group(1) == "pending":
        raise RuntimeError(f"the checking page did not finish: {dom[:500]!r}")
    return json.loads(html.unescape(match.group(1)))


def problems(results: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """What is wrong with each page: {path: [problem, ...]}, only pages with problems."""
    found: dict[str, list[str]] = {}
    for page in results:
        issues = []
        if page.get("error"):
            issues.append(page["error"])
        else:
            if not page.get("title"):
                issues.append("no title")
            if not page.get("h1", "").strip():
                issues.append("no heading")
            if page.get("text", 0) < 50:
                issues.append(f"almost no text ({page.get('text')} characters)")
            issues += [f"image did not load: {img['src']}" for img in page["images"] if not img["ok"]]
        if issues:
            found[page["path"]] = issues
    return found


def screenshots(site: str, chromium: str, out_dir: str, timeout: float = 60) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    written = []
    with serve(site) as base:
        for name, path in SCREENSHOTS.items():
            target = os.path.join(out_dir, f"{name}.png")
            run_chromium(chromium, ["--window-size=1280,1600", "--virtual-time-budget=5000",
                                    f"--screenshot={target}", base + path], timeout)
            written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("site", help="the built site (mkdocs build --site-dir)")
    p.add_argument("--screenshots", metavar="DIR", help="write screenshots of a few pages here")
    args = p.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("check_site: no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    results = check_pages(args.site, chromium)
    real = [r for r in results if r["path"] != BROKEN]
    bad = {path: issues for path, issues in problems(real).items()}
    for page in real:
        state = "; ".join(bad.get(page["path"], [])) or "ok"
        print(f"{page['path']:<40} {len(page.get('images', []))} image(s)  {state}")
    if BROKEN not in problems(results):
        print("check_site: the broken page was not noticed; the check itself is wrong", file=sys.stderr)
        return 1
    if args.screenshots:
        for path in screenshots(args.site, chromium, args.screenshots):
            print(f"wrote {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
