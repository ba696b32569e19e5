"""The settings table, the APP_MODULE parser and the config layers (no server)."""

import pytest

from prefork.app import AppNotFound, AppSpec, load_app
from prefork.settings import SETTINGS, ConfigError, Layer, build_config, parse_address


@pytest.mark.parametrize("text, kind, host, port, path, fd", [
    ("127.0.0.1:8000", "tcp", "127.0.0.1", 8000, "", -1),
    ("localhost", "tcp", "localhost", 8000, "", -1),
    (":9000", "tcp", "0.0.0.0", 9000, "", -1),
    ("[::1]:8080", "tcp", "::1", 8080, "", -1),
    ("[::]", "tcp", "::", 8000, "", -1),
    ("unix:/run/app.sock", "unix", "", 0, "/run/app.sock", -1),
    ("unix:///run/app.sock", "unix", "", 0, "/run/app.sock", -1),
    ("fd://3", "fd", "", 0, "", 3),
])
def test_parse_address(text, kind, host, port, path, fd):
    address = parse_address(text)
    assert (address.kind, address.host, address.port, address.path, address.fd) == (kind, host, port, path, fd)


@pytest.mark.parametrize("text", ["", "host:port", "1.2.3.4:70000", "::1:80", "unix:", "fd://x", "a b:80", "h:"])
def test_parse_address_rejects(text):
    with pytest.raises(ValueError):
        parse_address(text)


def test_defaults_follow_port_and_web_concurrency():
    cfg = build_config([], {"PORT": "5000", "WEB_CONCURRENCY": "3"})
    assert cfg.bind == ["0.0.0.0:5000"]
    assert cfg.workers == 3
    cfg = build_config([], {})
    assert cfg.bind == ["127.0.0.1:8000"]
    assert cfg.workers == 1


def test_bad_web_concurrency_is_an_error():
    with pytest.raises(ConfigError, match="WEB_CONCURRENCY"):
        build_config([], {"WEB_CONCURRENCY": "lots"})


def test_layers_override_in_order():
    cfg = build_config([
        Layer("config file x", {"workers": 2, "timeout": 10}, path="x.py", lines={"workers": 1}),
        Layer("command line", {"workers": "5"}),
    ], {})
    assert cfg.workers == 5 and cfg.sources["workers"] == "command line"
    assert cfg.timeout == 10.0 and cfg.sources["timeout"] == "config file x"
    assert cfg.sources["backlog"] == "default"


def test_config_file_error_names_file_and_line():
    with pytest.raises(ConfigError, match=r"^x.py:7: workers: must be at least 1"):
        build_config([Layer("config file x.py", {"workers": 0}, path="x.py", lines={"workers": 7})], {})


def test_every_setting_is_documented():
    for setting in SETTINGS:
        assert setting.help and setting.help[-1] == ".", setting.name
        assert setting.name.isidentifier()
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    flags = [f for s in SETTINGS for f in s.flags]
    assert len(flags) == len(set(flags))


def test_every_option_has_one_short_plain_sentence_for_help():
    for setting in SETTINGS:
        if not setting.flags:
            continue
        short = setting.short
        assert short and short.endswith(".") and short.count(". ") == 0, setting.name
        assert "``" not in short and len(short) <= 64, setting.name


@pytest.mark.parametrize("uri, module, attrs, call", [
    ("app", "app", [], None),
    ("pkg.mod:app", "pkg.mod", ["app"], None),
    ("mod:obj.wsgi", "mod", ["obj", "wsgi"], None),
    ("mod:create_app()", "mod", ["create_app"], ([], {})),
    ("mod:create_app('prod', debug=False, n=3)", "mod", ["create_app"], (["prod"], {"debug": False, "n": 3})),
])
def test_app_spec(uri, module, attrs, call):
    spec = AppSpec(uri)
    assert (spec.module, spec.attrs, spec.call) == (module, attrs, call)


@pytest.mark.parametrize("uri, message", [
    ("mod:create_app(os.environ)", "factory arguments must be literals"),
    ("mod:__import__('os').system('true')", "is not a name"),
    ("mod:app[0]", "is not a name"),
    ("mod:a b", "cannot parse"),
    ("", "expected module:name"),
    ("1mod:app", "expected module:name"),
    ("mod:f(**kw)", "** arguments not allowed"),
])
def test_app_spec_rejects(uri, message):
    with pytest.raises(AppNotFound, match=message.replace("*", r"\*").replace("(", r"\(")):
        AppSpec(uri)


def test_load_app_forms(monkeypatch):
    from conftest import APPS

    monkeypatch.syspath_prepend(APPS)
    import basic

    assert load_app("basic") is basic.application
    assert load_app("basic:pid") is basic.pid
    app = load_app("basic:factory('hey', punct='?')")
    body = app({}, lambda status, headers: None)
    assert body == [b"hey?"]
    with pytest.raises(AppNotFound, match="'basic.factory' is not callable|is not callable"):
        load_app("basic:not_callable()")


# --- deployment settings


def test_forwarded_allow_ips_defaults_and_environment():
    assert build_config([], {}).forwarded_allow_ips == ["127.0.0.1", "::1"]
    cfg = build_config([], {"FORWARDED_ALLOW_IPS": "10.0.0.0/8, 192.168.1.5"})
    assert cfg.forwarded_allow_ips == ["10.0.0.0/8", "192.168.1.5"]
    cfg = build_config([Layer("command line", {"forwarded_allow_ips": "*"})], {"FORWARDED_ALLOW_IPS": "10.0.0.1"})
    assert cfg.forwarded_allow_ips == ["*"]
    with pytest.raises(ConfigError, match=r"^FORWARDED_ALLOW_IPS: 'nginx' is not an IP address"):
        build_config([], {"FORWARDED_ALLOW_IPS": "nginx"})


@pytest.mark.parametrize("name, value, message", [
    ("forwarded_allow_ips", "10.0.0.0/33", "'10.0.0.0/33' is not an IP address"),
    ("proxy_allow_ips", ["10.0.0.1", "localhost"], "'localhost' is not an IP address"),
    ("secure_scheme_headers", "X-Forwarded-Proto: https", "expected a dict"),
    ("secure_scheme_headers", {"X-Proto": 1}, "must be a string"),
    ("certfile", "/nonexistent/cert.pem", "certificate file '/nonexistent/cert.pem' does not exist"),
    ("cert_reqs", "required", "expected 0 .none., 1 .optional. or 2 .required."),
    ("ssl_version", "SSLv3", "insecure"),
    ("ssl_version", "TLSv2", "expected TLS, TLSv1"),
    ("ciphers", "NO-SUCH-CIPHER", "no cipher matches"),
])
def test_deployment_settings_reject(name, value, message):
    with pytest.raises(ConfigError, match=message):
        build_config([Layer("command line", {name: value})], {})


@pytest.mark.parametrize("value, expected", [
    ("TLS", "TLS"), ("SSLv23", "TLS"), ("tlsv1_2", "TLSv1_2"), ("TLSv1.3", "TLSv1_3"),
    ("PROTOCOL_TLSv1_1", "TLSv1_1"), (2, "TLS"), (5, "TLSv1_2"), (17, "TLS"),
])
def test_ssl_version_names(value, expected):
    assert build_config([Layer("command line", {"ssl_version": value})], {}).ssl_version == expected


def test_secure_scheme_headers_names_are_upper_cased():
    cfg = build_config([Layer("config file x", {"secure_scheme_headers": {"X-Scheme": "https"}})], {})
    assert cfg.secure_scheme_headers == {"X-SCHEME": "https"}
