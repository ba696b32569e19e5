"""Helpers for the observability tests: scraping a real server's metrics."""

import http.client
import re
import socket
import time

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def metrics_port(server, timeout=10.0):
    """The port the server's metrics endpoint listens on (--metrics-bind HOST:0)."""
    match = server.wait_for_log(r"Metrics at http://127\.0\.0\.1:(\d+)/metrics", timeout)
    return int(match.group(1))


def get(port, path="/metrics", accept=None, method="GET", timeout=10.0):
    """(status, headers dict, body text) of one request over a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Accept": accept} if accept else {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


class Scrape:
    """One parsed scrape: ``value(name, **labels)`` for a sample."""

    def __init__(self, text, openmetrics=False):
        parse = parse_openmetrics if openmetrics else parse_text
        self.text = text
        self.families = {family.name: family for family in parse(text)}
        self.samples = {}
        for family in self.families.values():
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name, **labels):
        return self.samples.get((name, frozenset(labels.items())))

    def matching(self, name, **labels):
        """{labels: value} of every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return {key[1]: value for key, value in self.samples.items()
                if key[0] == name and wanted <= key[1]}

    def total(self, name, **labels):
        return sum(self.matching(name, **labels).values())


def scrape(port, openmetrics=False):
    status, headers, body = get(port, accept=OPENMETRICS if openmetrics else None)
    assert status == 200, body
    return Scrape(body, openmetrics)


def wait_for_scrape(port, predicate, timeout=10.0):
    """Scrape until ``predicate(scrape)`` holds; return that scrape (or the last)."""
    deadline = time.monotonic() + timeout
    while True:
        result = scrape(port)
        if predicate(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def send_request(port, data):
    """Open a connection and send ``data`` without reading: it waits in the server."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    return sock


def body_of(response_bytes):
    return response_bytes.split(b"\r\n\r\n", 1)[1]


def header_of(response_bytes, name):
    head = response_bytes.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    values = re.findall(rf"(?im)^{re.escape(name)}: (.*?)\r?$", head)
    return values
