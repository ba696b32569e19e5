# Gunicorn's settings, as data: every name Gunicorn knows (up to 27.0), its
# command-line flags, and what a user moving to prefork should know about it.
# This is the one place that lists Gunicorn's names. Which of them prefork
# supports is never written down: it is computed from the settings table
# (settings.py), so a name stops being reported as unsupported as soon as a
# setting with that name (or with it as ``gunicorn=`` alias) is added there.
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VALUE = "value"  # the flag takes a value: --threads 4
FLAG = "flag"  # a switch: --preload
NONE = "none"  # config file only (hooks, dicts)


@dataclass(frozen=True)
class GunicornSetting:
    name: str
    flags: tuple[str, ...]
    kind: str
    note: str = ""  # how prefork differs, or what to use instead


def _g(name: str, flags: str = "", kind: str = VALUE, note: str = "") -> GunicornSetting:
    return GunicornSetting(name, tuple(flags.split()), kind if flags else NONE, note)


_HOOK = "A server hook: a function in the config file that the server calls."

GUNICORN_SETTINGS: dict[str, GunicornSetting] = {g.name: g for g in [
    # config file
    _g("config", "-c --config", note="prefork reads ./prefork.conf.py by default, and "
       "./gunicorn.conf.py when there is no prefork.conf.py; as root, not one that another "
       "user could have written."),
    _g("wsgi_app"),
    # debugging
    _g("reload", "--reload", FLAG, note="The master watches the files and reloads as HUP does: "
       "new code that fails to import keeps the old workers serving. Refused with --preload."),
    _g("reload_engine", "--reload-engine",
       note="inotify uses the watchfiles package (prefork[reload]), not inotify."),
    _g("reload_extra_files", "--reload-extra-file"),
    _g("spew", "--spew", FLAG, note="Use a debugger or py-spy instead."),
    _g("check_config", "--check-config", FLAG),
    _g("print_config", "--print-config", FLAG,
       note="prefork also prints where each value came from."),
    # server socket
    _g("bind", "-b --bind"),
    _g("backlog", "--backlog"),
    # worker processes
    _g("workers", "-w --workers"),
    _g("worker_class", "-k --worker-class",
       note="A class prefork does not have (gevent, eventlet, tornado, an ASGI or any other "
            "class path) stops prefork with exit status 2 and a message saying what to use."),
    _g("threads", "--threads", note="As in Gunicorn, more than 1 without -k selects gthread. "
       "A request that runs past --timeout is reported with its thread's stack."),
    _g("worker_connections", "--worker-connections",
       note="Used by the gthread worker: busy and idle connections together."),
    _g("max_requests", "--max-requests"),
    _g("max_requests_jitter", "--max-requests-jitter"),
    _g("timeout", "-t --timeout",
       note="Application loading has its own limit, boot_timeout (--boot-timeout)."),
    _g("graceful_timeout", "--graceful-timeout"),
    _g("keepalive", "--keep-alive"),
    _g("http_parser", "--http-parser",
       note="prefork's choices are python (its own parser) and httptools (llhttp)."),
    _g("asgi_loop", "--asgi-loop", note="prefork serves WSGI applications only."),
    _g("asgi_lifespan", "--asgi-lifespan", note="prefork serves WSGI applications only."),
    _g("asgi_disconnect_grace_period", "--asgi-disconnect-grace-period",
       note="prefork serves WSGI applications only."),
    _g("websocket_max_message_size", "--websocket-max-message-size"),
    # security
    _g("limit_request_line", "--limit-request-line",
       note="The default is 8190, not 4094 (RFC 9112 §3); values above 8190 are allowed."),
    _g("limit_request_fields", "--limit-request-fields"),
    _g("limit_request_field_size", "--limit-request-field_size"),
    # server mechanics
    _g("preload_app", "--preload", FLAG),
    _g("sendfile", "--no-sendfile", FLAG),
    _g("reuse_port", "--reuse-port", FLAG, note="Linux only. Each worker gets its own "
       "SO_REUSEPORT listening socket and the kernel spreads connections across them; "
       "as in Gunicorn, another server started with it on the same port shares the port."),
    _g("chdir", "--chdir"),
    _g("daemon", "-D --daemon", FLAG),
    _g("raw_env", "-e --env"),
    _g("pidfile", "-p --pid"),
    _g("worker_tmp_dir", "--worker-tmp-dir"),
    _g("user", "-u --user"),
    _g("group", "-g --group"),
    _g("umask", "-m --umask"),
    _g("initgroups", "--initgroups", FLAG),
    _g("tmp_upload_dir"),
    _g("secure_scheme_headers"),
    _g("forwarded_allow_ips", "--forwarded-allow-ips"),
    _g("forwarder_headers", "--forwarder-headers"),
    _g("pythonpath", "--pythonpath"),
    _g("paste", "--paste --paster", note="Name the WSGI callable as APP_MODULE instead."),
    _g("raw_paste_global_conf", "--paste-global"),
    _g("proxy_protocol", "--proxy-protocol", FLAG,
       note="Versions 1 and 2. Connections from --proxy-allow-from must start with a PROXY "
            "header (Gunicorn takes one if it is there); other peers speak plain HTTP."),
    _g("proxy_allow_ips", "--proxy-allow-from"),
    _g("protocol", "--protocol"),
    _g("uwsgi_allow_ips", "--uwsgi-allow-from"),
    _g("strip_header_spaces", "--strip-header-spaces", FLAG,
       note="prefork always refuses whitespace before a header's colon (RFC 9112)."),
    _g("permit_unconventional_http_method", "--permit-unconventional-http-method", FLAG),
    _g("permit_unconventional_http_version", "--permit-unconventional-http-version", FLAG),
    _g("permit_obsolete_folding", "--permit-obsolete-folding", FLAG),
    _g("casefold_http_method", "--casefold-http-method", FLAG),
    _g("header_map", "--header-map"),
    _g("root_path", "--root-path"),
    # logging
    _g("accesslog", "--access-logfile"),
    _g("disable_redirect_access_to_syslog", "--disable-redirect-access-to-syslog", FLAG),
    _g("access_log_format", "--access-logformat",
       note="%(t)s is the time the request started (Gunicorn: when it was logged); "
       "a repeated request header in %({name}i)s gives all its values, comma-separated."),
    _g("errorlog", "--error-logfile --log-file"),
    _g("loglevel", "--log-level"),
    _g("capture_output", "--capture-output", FLAG,
       note="Also works with the error log on standard error (-)."),
    _g("logger_class", "--logger-class",
       note="Use logconfig_dict, logconfig or logconfig_json to change how logs are written."),
    _g("logconfig", "--log-config",
       note="Loggers named gunicorn.error and gunicorn.access in the file are used as "
       "prefork's error and access loggers."),
    _g("logconfig_dict", note="Also --log-config-dict JSON on the command line. Loggers named "
       "gunicorn.error and gunicorn.access are used as prefork's."),
    _g("logconfig_json", "--log-config-json",
       note="Loggers named gunicorn.error and gunicorn.access are used as prefork's."),
    _g("syslog_addr", "--log-syslog-to"),
    _g("syslog", "--log-syslog", FLAG),
    _g("syslog_prefix", "--log-syslog-prefix"),
    _g("syslog_facility", "--log-syslog-facility"),
    _g("enable_stdio_inheritance", "-R --enable-stdio-inheritance", FLAG),
    _g("statsd_host", "--statsd-host", note="Gunicorn's metric names, nothing else; prefork's "
       "own figures (histograms, restarts by reason, listen queues) are on --metrics-bind."),
    _g("dogstatsd_tags", "--dogstatsd-tags"),
    _g("statsd_prefix", "--statsd-prefix"),
    _g("enable_backlog_metric", "--enable-backlog-metric", FLAG,
       note="For statsd; the Prometheus endpoint always has the listen queues."),
    # process naming
    _g("proc_name", "-n --name"),
    _g("default_proc_name"),
    # server hooks
    *[_g(hook) for hook in (
        "on_starting", "on_reload", "pre_fork", "post_fork", "post_worker_init",
        "worker_int", "worker_abort", "pre_exec", "pre_request", "post_request", "child_exit",
        "worker_exit", "nworkers_changed", "on_exit")],
    _g("when_ready", note="Called once the first workers are ready to serve (Gunicorn calls "
                          "it when the master has started, before any worker has booted)."),
    _g("ssl_context", note=_HOOK),
    # TLS
    _g("keyfile", "--keyfile"),
    _g("certfile", "--certfile"),
    _g("ssl_version", "--ssl-version",
       note="The oldest TLS version accepted; the newest both sides support is negotiated."),
    _g("cert_reqs", "--cert-reqs"),
    _g("ca_certs", "--ca-certs"),
    _g("suppress_ragged_eofs", "--suppress-ragged-eofs", FLAG),
    _g("do_handshake_on_connect", "--do-handshake-on-connect", FLAG,
       note="The handshake is always completed in the worker right after accept(), within --timeout."),
    _g("ciphers", "--ciphers"),
    # HTTP/2 (Gunicorn 24+)
    _g("http_protocols", "--http-protocols", note="prefork speaks HTTP/1.x."),
    _g("http2_cleartext", "--http2-cleartext", note="prefork speaks HTTP/1.x."),
    _g("http2_max_concurrent_streams", "--http2-max-concurrent-streams"),
    _g("http2_initial_window_size", "--http2-initial-window-size"),
    _g("http2_max_frame_size", "--http2-max-frame-size"),
    _g("http2_max_header_list_size", "--http2-max-header-list-size"),
    # control socket and dirty arbiters (Gunicorn 25+)
    _g("control_socket", "--control-socket", note="Off unless given (Gunicorn creates "
       "./gunicorn.ctl by default); the client is preforkctl."),
    _g("control_socket_mode", "--control-socket-mode"),
    _g("control_socket_disable", "--no-control-socket", FLAG),
    _g("dirty_apps", "--dirty-app"),
    _g("dirty_workers", "--dirty-workers"),
    _g("dirty_timeout", "--dirty-timeout"),
    _g("dirty_threads", "--dirty-threads"),
    _g("dirty_graceful_timeout", "--dirty-graceful-timeout"),
    *[_g(hook, note=_HOOK) for hook in (
        "on_dirty_starting", "dirty_post_fork", "dirty_worker_init", "dirty_worker_exit")],
]}

# Each Gunicorn flag, and the setting it belongs to.
GUNICORN_FLAGS: dict[str, GunicornSetting] = {
    flag: g for g in GUNICORN_SETTINGS.values() for flag in g.flags
}


# --- warnings about Gunicorn settings prefork ignores


class IgnoredSetting(str):
    """A warning about a setting that sets nothing, with the setting's name and
    value, so that the harmless ones can be told apart once the whole
    configuration is known (``harmless``)."""

    setting: str
    value: Any

    def __new__(cls, text: str, setting: str, value: Any = None) -> IgnoredSetting:
        warning = super().__new__(cls, text)
        warning.setting = setting
        warning.value = value
        return warning


# Gunicorn settings whose value changes nothing under prefork's configuration:
# they are mentioned at debug level only, so that the warnings that remain are
# the ones that change how the server behaves.
HARMLESS: dict[str, Callable[[Any, Any], bool]] = {
    # prefork always uses sendfile() where it can, and never strips header spaces.
    "sendfile": lambda value, cfg: value is None or bool(value),
    "strip_header_spaces": lambda value, cfg: not value,
}


def harmless(warning: str, cfg: Any) -> bool:
    """Whether ``warning`` is about a setting that is a no-op with ``cfg``."""
    check = HARMLESS.get(getattr(warning, "setting", ""))
    return check is not None and check(getattr(warning, "value", None), cfg)
