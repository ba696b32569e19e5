"""The access log: every Gunicorn atom, checked exactly against real requests."""

import base64
import http.client
import json
import os
import re
import time
from datetime import datetime

import pytest
from conftest import APPS

from prefork.testing import serve

ATOMS = ["h", "l", "u", "t", "r", "m", "U", "q", "H", "s", "B", "b", "f", "a", "T", "M", "D",
         "L", "p", "{X-Request-Id}i", "{x-multi}i", "{X-Missing}i", "{x-app}o",
         "{Content-Length}o", "{REMOTE_PORT}e", "{wsgi.url_scheme}e", "{NO_SUCH}e", "nosuch"]
FORMAT = "\t".join(f"{atom}=%({atom})s" for atom in ATOMS)
USER_AGENT = 'agent "quoted" 1.0'
PATH = "/a%20b/c?x=1&y=%22z%22"


def wait_for_lines(path, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        lines = open(path).read().splitlines() if os.path.exists(path) else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def request(port, path, headers):
    """One request over a fresh connection: (status, body, client port, start, end)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    client_port = conn.sock.getsockname()[1]
    before = time.time()
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers:
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    after = time.time()
    conn.close()
    return response.status, body, client_port, before, after


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Two real requests through a server logging every atom; their parsed lines."""
    access = str(tmp_path_factory.mktemp("access") / "access.log")
    with serve("logapp:app", cwd=APPS, accesslog=access, access_log_format=FORMAT) as server:
        auth = "Basic " + base64.b64encode(b"alice:secret").decode()
        first = request(server.port, PATH, [
            ("Host", "example.test"), ("User-Agent", USER_AGENT), ("Authorization", auth),
            ("Referer", "http://ref.test/from"), ("X-Request-Id", "req-42"),
            ("X-Multi", "one"), ("X-Multi", "two"),
        ])
        slow = request(server.port, "/slow?sleep=1.1&status=404", [("Host", "h")])
        lines = wait_for_lines(access, 2)
    assert len(lines) == 2, lines
    records = []
    for line in lines:
        fields = dict(part.split("=", 1) for part in line.split("\t"))
        assert list(fields) == ATOMS
        records.append(fields)
    return {"first": (records[0], first), "slow": (records[1], slow)}


EXPECTED_FIRST = {
    "h": "127.0.0.1",
    "l": "-",
    "u": "alice",
    "r": 'GET /a%20b/c?x=1&y=%22z%22 HTTP/1.1',
    "m": "GET",
    "U": "/a b/c",
    "q": "x=1&y=%22z%22",
    "H": "HTTP/1.1",
    "s": "200",
    "f": "http://ref.test/from",
    "a": 'agent \\"quoted\\" 1.0',
    "{X-Request-Id}i": "req-42",
    "{x-multi}i": "one, two",
    "{X-Missing}i": "-",
    "{x-app}o": 'say \\"hi\\"',
    "{wsgi.url_scheme}e": "http",
    "{NO_SUCH}e": "-",
    "nosuch": "-",
}


@pytest.mark.parametrize("atom", sorted(EXPECTED_FIRST))
def test_atom_exact(logged, atom):
    fields, _ = logged["first"]
    assert fields[atom] == EXPECTED_FIRST[atom]


def test_body_length_atoms(logged):
    fields, (status, body, _, _, _) = logged["first"]
    assert status == 200
    assert fields["B"] == fields["b"] == fields["{Content-Length}o"] == str(len(body))


def test_pid_atom_is_the_worker_that_served(logged):
    fields, (_, body, _, _, _) = logged["first"]
    assert fields["p"] == f"<{body.decode()}>"


def test_remote_port_from_the_environ(logged):
    fields, (_, _, client_port, _, _) = logged["first"]
    assert fields["{REMOTE_PORT}e"] == str(client_port)


def test_time_atom_is_the_request_start(logged):
    fields, (_, _, _, before, after) = logged["slow"]
    assert re.fullmatch(r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", fields["t"])
    stamp = datetime.strptime(fields["t"], "[%d/%b/%Y:%H:%M:%S %z]").timestamp()
    # The request took 1.1 s: the time it finished is at least a second later.
    assert int(before) <= stamp <= before + 0.5


def test_duration_atoms_agree_to_the_microsecond(logged):
    fields, (status, _, _, before, after) = logged["slow"]
    assert status == 404 and fields["s"] == "404"
    us = int(fields["D"])
    # The worker stops its clock after sending the response, so it may end a
    # little after the client has read it.
    assert 1_100_000 <= us <= (after - before + 0.1) * 1_000_000
    assert fields["L"] == "%d.%06d" % divmod(us, 1_000_000)
    assert fields["M"] == str(us // 1000)
    assert fields["T"] == str(us // 1_000_000) == "1"
    assert fields["u"] == fields["f"] == "-"


def test_default_format_is_gunicorns(test_app, tmp_path):
    access = tmp_path / "access.log"
    server = test_app("logapp:app", accesslog=str(access))
    auth = "Basic " + base64.b64encode(b"bob:pw").decode()
    _, body, _, before, _ = request(server.port, "/p?q=1", [
        ("Host", "h"), ("User-Agent", "curl/8.0"), ("Referer", "http://r/"), ("Authorization", auth)])
    line = wait_for_lines(access, 1)[0]
    stamp = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(int(before)))
    assert line == f'127.0.0.1 - bob {stamp} "GET /p?q=1 HTTP/1.1" 200 {len(body)} "http://r/" "curl/8.0"'


def test_json_access_and_error_lines(test_app, tmp_path):
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    server = test_app("logapp:app", accesslog=str(access), errorlog=str(errors), log_format="json")
    _, body, _, before, after = request(server.port, "/j?errors=oops&sleep=0.2", [
        ("Host", "h"), ("User-Agent", "ua"), ("Authorization", "Basic " + base64.b64encode(b"u:p").decode())])
    record = json.loads(wait_for_lines(access, 1)[0])
    assert set(record) == {"time", "level", "pid", "logger", "message", "remote_addr", "remote_user",
                           "method", "path", "query", "protocol", "status", "bytes", "referer",
                           "user_agent", "duration_us", "request_id"}
    assert record["pid"] == int(body) and record["logger"] == "prefork.access"
    assert (record["method"], record["path"], record["query"], record["protocol"]) == (
        "GET", "/j", "errors=oops&sleep=0.2", "HTTP/1.1")
    assert record["message"] == "GET /j?errors=oops&sleep=0.2 HTTP/1.1"
    assert (record["status"], record["bytes"], record["remote_addr"], record["remote_user"]) == (
        200, len(body), "127.0.0.1", "u")
    assert record["referer"] is None and record["user_agent"] == "ua"
    assert re.fullmatch(r"[0-9a-f]{24}", record["request_id"])  # generated: nothing was sent
    assert 200_000 <= record["duration_us"] <= (after - before + 0.1) * 1_000_000
    started = datetime.fromisoformat(record["time"])
    assert re.search(r"\.\d{6}[+-]\d\d:\d\d$", record["time"])
    assert before - 0.001 <= started.timestamp() <= before + 0.15  # the start, not the end
    deadline = time.monotonic() + 5
    while "errors:oops" not in errors.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = errors.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "pid", "logger", "message"} <= set(parsed[0])
    assert any(p["message"].startswith("Starting prefork") and p["level"] == "info" for p in parsed)
    app_error = [p for p in parsed if p["message"] == "errors:oops"]
    assert app_error and app_error[0]["level"] == "error" and app_error[0]["pid"] == int(body)
