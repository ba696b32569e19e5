"""HTTP parser micro-benchmark: prefork's sans-IO parser against Gunicorn's
Python parser and httptools (llhttp, in C), whichever are installed.

Two workloads, each measured the same way for every parser (best of
``--repeat`` runs of ``timeit``, as time per operation):

* ``head``: a typical browser GET with 11 header fields, parsed into a request
  object with its framing decided (prefork: ``parse_head`` and the body
  reader; prefork-httptools: the same with ``--http-parser httptools``, which
  is what a worker pays then; Gunicorn: ``gunicorn.http.message.Request``;
  httptools: a bare ``HttpRequestParser`` collecting the URL and the fields as
  bytes, deciding nothing).
* ``chunked``: a 1 MiB chunked request body in 16 KiB chunks, arriving in
  64 KiB reads, decoded to its payload. prefork-httptools reads bodies with
  prefork's own reader, so it has no row of its own here.

Gunicorn and httptools are not prefork dependencies; install them in a
separate environment:

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install gunicorn httptools
    .venv-bench/bin/python bench/parser_bench.py

Ratios are computed within one run, never across runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prefork.http.body import ChunkedBody, LengthBody  # noqa: E402
from prefork.http.request import Limits, parse_head  # noqa: E402

HEAD = (
    b"GET /products/search?q=running+shoes&page=2 HTTP/1.1\r\n"
    b"Host: shop.example.com\r\n"
    b"Connection: keep-alive\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/124.0.0.0 Safari/537.36\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
    b"image/webp,*/*;q=0.8\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-Mode: navigate\r\n"
    b"Referer: https://shop.example.com/products\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Cookie: session=7f3a9c0e2b4d4e1f; theme=dark; consent=1\r\n"
    b"\r\n"
)

PAYLOAD = os.urandom(1 << 20)
CHUNK = 16384
CHUNKED_HEAD = (b"POST /upload HTTP/1.1\r\nHost: shop.example.com\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
CHUNKED_BODY = b"".join(
    b"%x\r\n%b\r\n" % (len(PAYLOAD[i:i + CHUNK]), PAYLOAD[i:i + CHUNK])
    for i in range(0, len(PAYLOAD), CHUNK)
) + b"0\r\n\r\n"
READ = 65536
READS = [CHUNKED_BODY[i:i + READ] for i in range(0, len(CHUNKED_BODY), READ)]


# --- prefork

LIMITS = Limits()


def prefork_head() -> object:
    req, used = parse_head(HEAD, LIMITS)  # type: ignore[misc]
    LengthBody(req.content_length)
    return req


def prefork_chunked() -> bytes:
    body = ChunkedBody(LIMITS)
    out = [body.feed(piece) for piece in READS]
    assert body.done
    return b"".join(out)


# --- prefork with --http-parser httptools: the head through llhttp


def prefork_httptools_parsers() -> tuple[Callable[[], object], Callable[[], bytes] | None] | None:
    try:
        from prefork.http.llhttp import parse_head as llhttp_parse_head
    except ImportError:
        return None

    def head() -> object:
        req, used = llhttp_parse_head(HEAD, LIMITS)  # type: ignore[misc]
        LengthBody(req.content_length)
        return req

    return head, None


# --- Gunicorn's Python parser


def gunicorn_parsers() -> tuple[Callable[[], object], Callable[[], bytes]] | None:
    try:
        from gunicorn.config import Config
        from gunicorn.http.message import Request
        from gunicorn.http.unreader import IterUnreader
    except ImportError:
        return None
    cfg = Config()
    peer = ("127.0.0.1", 40000)

    def head() -> object:
        return Request(cfg, IterUnreader([HEAD]), peer)

    def chunked() -> bytes:
        req = Request(cfg, IterUnreader([CHUNKED_HEAD + READS[0], *READS[1:]]), peer)
        out = []
        while data := req.body.read(READ):
            out.append(data)
        return b"".join(out)

    return head, chunked


# --- httptools (llhttp)


def httptools_parsers() -> tuple[Callable[[], object], Callable[[], bytes]] | None:
    try:
        import httptools
    except ImportError:
        return None

    class Collector:
        __slots__ = ("url", "headers", "body", "done")

        def __init__(self) -> None:
            self.url = b""
            self.headers: list[tuple[bytes, bytes]] = []
            self.body: list[bytes] = []
            self.done = False

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_body(self, data: bytes) -> None:
            self.body.append(data)

        def on_message_complete(self) -> None:
            self.done = True

    def head() -> object:
        collector = Collector()
        parser = httptools.HttpRequestParser(collector)
        parser.feed_data(HEAD)
        httptools.parse_url(collector.url)
        return collector

    def chunked() -> bytes:
        collector = Collector()
        parser = httptools.HttpRequestParser(collector)
        parser.feed_data(CHUNKED_HEAD)
        for piece in READS:
            parser.feed_data(piece)
        assert collector.done
        return b"".join(collector.body)

    return head, chunked


def best(func: Callable[[], object], number: int, repeat: int) -> float:
    """Seconds per call: the best of ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="timeit runs per measurement (best is kept)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the calls per run")
    args = parser.parse_args()

    assert prefork_chunked() == PAYLOAD
    contenders: dict[str, tuple[Callable[[], object], Callable[[], bytes] | None]] = {
        "prefork": (prefork_head, prefork_chunked),
    }
    factories = (
        ("prefork-httptools", prefork_httptools_parsers),
        ("gunicorn", gunicorn_parsers),
        ("httptools", httptools_parsers),
    )
    for name, factory in factories:
        parsers = factory()
        if parsers is None:
            print(f"({name} is not installed: skipped)")
            continue
        chunked = parsers[1]
        assert chunked is None or chunked() == PAYLOAD, name
        contenders[name] = parsers

    workloads = [
        ("head: browser GET, 11 fields", 0, int(20000 * args.scale), 1e6, "µs"),
        ("chunked: 1 MiB body, 16 KiB chunks", 1, max(1, int(20 * args.scale)), 1e3, "ms"),
    ]
    print(f"Python {sys.version.split()[0]}; best of {args.repeat} runs; lower is better")
    for title, index, number, unit_scale, unit in workloads:
        times = {name: best(func, number, args.repeat)
                 for name, funcs in contenders.items() if (func := funcs[index]) is not None}
        print(f"\n{title}")
        print(f"  {'parser':<18} {'time/op':>12} {'prefork speed-up':>18}")
        for name, seconds in times.items():
            ratio = seconds / times["prefork"]
            print(f"  {name:<18} {seconds * unit_scale:>9.2f} {unit:<2} {ratio:>17.2f}×")


if __name__ == "__main__":
    main()
