# Every setting is declared once, in SETTINGS below: its config name (the same
# as Gunicorn's wherever Gunicorn has one, so an existing config file keeps
# working), its command-line flags, a validator that turns text or a Python
# value into the typed value, a default, and the help paragraph. The click
# command, the environment-variable parser, the config-file loader and
# docs/settings.md are all derived from this table.
from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(Exception):
    """A setting has a value that cannot be used; the message is one line."""


# --- validators: each takes text (from the command line or an environment
# variable) or a Python value (from a config file) and returns the typed value.


def _integer(value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", text):
            raise ValueError(f"expected an integer, got {value!r}")
        value = int(text)
    if not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"must be at least {minimum}, got {value}")
    return value


def positive_int(value: Any) -> int:
    return _integer(value, 1)


def nonneg_int(value: Any) -> int:
    return _integer(value, 0)


def nonneg_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"must be a finite number ≥ 0, got {value!r}")
    return number


def positive_float(value: Any) -> float:
    number = nonneg_float(value)
    if number == 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    return number


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"expected true or false, got {value!r}")


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def optional_string(value: Any) -> str | None:
    if value is None:
        return None
    return string(value)


def worker_class_name(value: Any) -> str:
    """A worker class name; which names exist is the workers' registry's business
    (checked once the configuration is complete, see prefork.workers)."""
    text = string(value).strip()
    if not text:
        raise ValueError("expected a worker class name such as sync")
    return text if "." in text or ":" in text else text.lower()


def choice(*options: str) -> Callable[[Any], str]:
    def validate(value: Any) -> str:
        text = string(value).strip().lower()
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return text

    return validate


HTTP_PARSERS = ("python", "httptools")
# Older llhttp accepts obs-fold, empty field names and whitespace before a
# colon in some heads, which prefork must refuse (request smuggling).
HTTPTOOLS_MIN = (0, 6, 4)


def http_parser(value: Any) -> str:
    """``python`` or ``httptools``; the latter only if a recent enough httptools imports."""
    name = choice(*HTTP_PARSERS)(value)
    if name == "httptools":
        try:
            import httptools
        except ImportError:
            raise ValueError("httptools is not installed: pip install 'prefork[httptools]'") from None
        version = getattr(httptools, "__version__", "0")
        if _version_tuple(version) < HTTPTOOLS_MIN:
            raise ValueError(f"httptools {version} is too old (its parser accepts heads prefork "
                             "refuses): pip install 'httptools>=0.6.4'")
    return name


RELOAD_ENGINES = ("auto", "poll", "inotify")


def reload_engine(value: Any) -> str:
    """``auto``, ``poll`` or ``inotify``; the last only if watchfiles imports."""
    name = choice(*RELOAD_ENGINES)(value)
    if name == "inotify" and not watchfiles_installed():
        raise ValueError("inotify needs the watchfiles package: pip install 'prefork[reload]'")
    return name


def watchfiles_installed() -> bool:
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return False
    return True


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        parts.append(int(digits or 0))
    return tuple(parts)


def string_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"expected a string or a list of strings, got {value!r}")


def existing_dir(value: Any) -> str:
    path = string(value)
    if not os.path.isdir(path):
        raise ValueError(f"no such directory: {path}")
    return path


def optional_dir(value: Any) -> str | None:
    if value is None:
        return None
    return existing_dir(value)


def _account_id(value: Any, kind: str, lookup: Callable[[str], int]) -> int | None:
    """A numeric id, or the id of a user or group name."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return _integer(value, 0)
    text = string(value).strip()
    if text.isdigit():
        return int(text)
    try:
        return lookup(text)
    except KeyError:
        raise ValueError(f"no such {kind}: {text!r}") from None


def user_id(value: Any) -> int | None:
    """A user name or numeric uid."""
    import pwd

    return _account_id(value, "user", lambda name: pwd.getpwnam(name).pw_uid)


def group_id(value: Any) -> int | None:
    """A group name or numeric gid."""
    import grp

    return _account_id(value, "group", lambda name: grp.getgrnam(name).gr_gid)


def umask(value: Any) -> int | None:
    """An octal mask: ``022``, ``0o022`` or an int."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = string(value).strip().lower().removeprefix("0o")
        if not re.fullmatch(r"[0-7]{1,4}", text):
            raise ValueError(f"expected an octal mask such as 022, got {value!r}")
        number = int(text, 8)
    if not 0 <= number <= 0o777:
        raise ValueError(f"umask must be between 000 and 777, got {value!r}")
    return number


def env_pairs(value: Any) -> list[str]:
    """``KEY=VALUE`` strings."""
    pairs = string_list(value)
    for pair in pairs:
        key, sep, _ = pair.partition("=")
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
    return pairs


def hook(arity: int) -> Callable[[Any], Any]:
    """A server hook: a callable taking ``arity`` positional arguments, or None."""

    def validate(value: Any) -> Any:
        if value is None:
            return None
        if not callable(value):
            raise ValueError(f"a hook must be callable, got {value!r}")
        import inspect

        try:
            inspect.signature(value).bind(*range(arity))
        except TypeError:
            raise ValueError(f"{getattr(value, '__name__', value)!r} must accept {arity} "
                             f"positional argument{'s' if arity != 1 else ''}") from None
        except ValueError:
            pass  # builtins without a signature: trust them
        return value

    return validate


# --- bind addresses


@dataclass(frozen=True)
class Address:
    """A place to listen: ``kind`` is "tcp", "unix" or "fd"."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse ``HOST:PORT``, ``[IPV6]:PORT``, ``HOST``, ``unix:PATH`` or ``fd://N``."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty bind address {text!r}")
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"bind address {text!r} has no socket path")
        return Address("unix", path=path)
    if text.startswith("fd://"):
        fd = text[5:]
        if not fd.isdigit():
            raise ValueError(f"bind address {text!r}: expected fd://N with N a file descriptor")
        return Address("fd", fd=int(fd))
    match = re.fullmatch(r"\[([0-9A-Fa-f:.%a-zA-Z]+)\](?::([0-9]+))?", text)
    if match:
        host, port = match.group(1), match.group(2)
    elif text.count(":") > 1:
        raise ValueError(f"bind address {text!r}: put IPv6 addresses in brackets, [::1]:8000")
    else:
        host, _, port = text.partition(":")
        if not port and text.endswith(":"):
            raise ValueError(f"bind address {text!r} has an empty port")
        if not re.fullmatch(r"[A-Za-z0-9.\-_]*", host):
            raise ValueError(f"bind address {text!r}: invalid host {host!r}")
    if port is None or port == "":
        port_number = 8000
    elif port.isdigit() and int(port) <= 65535:
        port_number = int(port)
    else:
        raise ValueError(f"bind address {text!r}: invalid port {port!r}")
    return Address("tcp", host=host or "0.0.0.0", port=port_number)


def bind_list(value: Any) -> list[str]:
    addresses = string_list(value)
    if not addresses:
        raise ValueError("at least one bind address is needed")
    for text in addresses:
        parse_address(text)
    return [a.strip() for a in addresses]


def default_bind(env: Mapping[str, str]) -> list[str]:
    port = env.get("PORT")
    if port:
        return [f"0.0.0.0:{port}"]
    return ["127.0.0.1:8000"]


def default_workers(env: Mapping[str, str]) -> int:
    value = env.get("WEB_CONCURRENCY")
    if value:
        try:
            return positive_int(value)
        except ValueError:
            raise ConfigError(f"WEB_CONCURRENCY: {value!r} is not a positive integer") from None
    return 1


# --- validators for configuration and logging

# Gunicorn's default access-log format, so that parsers written for it keep working.
DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


class _AnyAtom(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "-"


def access_log_format(value: Any) -> str:
    text = string(value)
    try:
        text % _AnyAtom()
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"invalid access log format {text!r}: {exc}") from None
    return text


def optional_file(value: Any) -> str | None:
    if value is None:
        return None
    path = string(value)
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    return path


def log_config_dict(value: Any) -> dict[str, Any] | None:
    """A dictConfig dictionary, or JSON text holding one (from the command line)."""
    if value is None:
        return None
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a dictionary, got {type(value).__name__}")
    return value


# --- deployment: reverse proxies and TLS


def ip_networks(value: Any) -> list[str]:
    """Comma-separated (or a list of) IP addresses, CIDR networks or ``*``."""
    import ipaddress

    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise ValueError(f"expected comma-separated IP addresses or networks, got {value!r}")
    entries: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item != "*":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address, a network (10.0.0.0/8) or *") from None
        entries.append(item)
    return entries


def default_forwarded_allow_ips(env: Mapping[str, str]) -> list[str]:
    value = env.get("FORWARDED_ALLOW_IPS")
    if value is None:
        return ["127.0.0.1", "::1"]
    try:
        return ip_networks(value)
    except ValueError as exc:
        raise ConfigError(f"FORWARDED_ALLOW_IPS: {exc}") from None


def header_values(value: Any) -> dict[str, str]:
    """A dict of header name -> exact value, e.g. ``{"X-FORWARDED-PROTO": "https"}``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a dict of header names to values, got {value!r}")
    headers: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
            raise ValueError(f"{name!r} is not a header name")
        if not isinstance(text, str):
            raise ValueError(f"the value for {name!r} must be a string, got {text!r}")
        headers[name.upper()] = text
    return headers


def readable_file(what: str) -> Callable[[Any], str | None]:
    def validate(value: Any) -> str | None:
        if value is None:
            return None
        path = string(value)
        if not os.path.isfile(path):
            raise ValueError(f"{what} {path!r} does not exist or is not a file")
        if not os.access(path, os.R_OK):
            raise ValueError(f"{what} {path!r} is not readable by this user")
        return path

    return validate


CERT_REQS = {"0": 0, "1": 1, "2": 2, "CERT_NONE": 0, "CERT_OPTIONAL": 1, "CERT_REQUIRED": 2}


def cert_reqs(value: Any) -> int:
    """0, 1 or 2: ``ssl.CERT_NONE``, ``CERT_OPTIONAL``, ``CERT_REQUIRED``."""
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1, 2):
        return value
    if isinstance(value, str) and value.strip().upper() in CERT_REQS:
        return CERT_REQS[value.strip().upper()]
    raise ValueError(f"expected 0 (none), 1 (optional) or 2 (required), got {value!r}")


# Gunicorn's --ssl-version chose an ``ssl.PROTOCOL_*`` constant. prefork always
# negotiates the highest version both sides support and reads the value as the
# lowest version it accepts. The ints are the ``ssl.PROTOCOL_*`` values an
# existing config file may hold.
SSL_VERSIONS = {
    "TLS": "TLS", "SSLV23": "TLS", "TLS_SERVER": "TLS",
    "TLSV1": "TLSv1", "TLSV1_1": "TLSv1_1", "TLSV1_2": "TLSv1_2", "TLSV1_3": "TLSv1_3",
}
SSL_PROTOCOL_NUMBERS = {2: "TLS", 17: "TLS", 3: "TLSv1", 4: "TLSv1_1", 5: "TLSv1_2"}


def ssl_version(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value in SSL_PROTOCOL_NUMBERS:
            return SSL_PROTOCOL_NUMBERS[value]
    elif isinstance(value, str):
        key = value.strip().upper().removeprefix("PROTOCOL_").replace(".", "_")
        if key in SSL_VERSIONS:
            return SSL_VERSIONS[key]
        if key in ("SSLV2", "SSLV3"):
            raise ValueError(f"{value} is insecure and not supported; use TLSv1_2 or TLSv1_3")
    raise ValueError(f"expected TLS, TLSv1, TLSv1_1, TLSv1_2 or TLSv1_3, got {value!r}")


def cipher_list(value: Any) -> str | None:
    """An OpenSSL cipher list, checked against this OpenSSL build."""
    if value is None:
        return None
    text = string(value).strip()
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(text)
    except ssl.SSLError:
        raise ValueError(f"no cipher matches {text!r} in this OpenSSL ({ssl.OPENSSL_VERSION})") from None
    return text


# --- observability: metrics, the control socket, statsd, request ids


def metrics_address(value: Any) -> str | None:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:PATH``; None is off."""
    if value is None:
        return None
    text = string(value).strip()
    address = parse_address(text)
    if address.kind == "fd":
        raise ValueError(f"{text!r}: give HOST:PORT or unix:PATH")
    if address.kind == "tcp" and not re.search(r":[0-9]+$", text):
        raise ValueError(f"{text!r} has no port: give HOST:PORT, e.g. 127.0.0.1:9100")
    return text


def statsd_address(value: Any) -> str | None:
    if value is None:
        return None
    from .statsd import parse_statsd_address

    text = string(value).strip()
    parse_statsd_address(text)
    return text


def file_mode(value: Any) -> int:
    """An octal permission mode: ``600``, ``0o660`` or an int."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        text = string(value).strip().lower().removeprefix("0o")
        if not re.fullmatch(r"[0-7]{1,4}", text):
            raise ValueError(f"expected an octal mode such as 600, got {value!r}")
        number = int(text, 8)
    if not 0 <= number <= 0o777:
        raise ValueError(f"a mode must be between 000 and 777, got {value!r}")
    return number


def request_id_header(value: Any) -> str:
    """A header name, or ``off`` (also empty) for no request ids."""
    from .http.grammar import TOKEN_RE

    text = string(value).strip()
    if text.lower() in ("", "off", "none", "false"):
        return ""
    if not TOKEN_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a header name")
    return text


def dogstatsd_tags(value: Any) -> str:
    """Comma-separated ``key:value`` (or bare) tags."""
    text = string(value).strip()
    if re.search(r"[|#\s]", text):
        raise ValueError(f"tags may not contain '|', '#' or spaces: {text!r}")
    return text


# --- the table


@dataclass(frozen=True)
class Setting:
    name: str
    section: str
    flags: tuple[str, ...]
    validate: Callable[[Any], Any]
    default: Any
    help: str
    example: str = ""
    metavar: str = ""
    multiple: bool = False
    is_flag: bool = False
    default_doc: str = ""
    gunicorn: str | None = field(default=None)  # Gunicorn's name if different
    from_file: bool = True  # may be set in a config file
    short: str = ""  # one plain sentence for --help; ``help`` is the full paragraph
    env: str = ""  # the environment variable the default comes from, when it is set

    def default_value(self, env: Mapping[str, str]) -> Any:
        if callable(self.default) and not self.is_flag:
            return self.default(env)
        return self.default

    @property
    def option_name(self) -> str:
        """The long flag, e.g. ``--workers``."""
        longs = [f for f in self.flags if f.startswith("--")]
        return longs[0] if longs else self.name


def _s(name: str, section: str, flags: tuple[str, ...], validate: Callable[[Any], Any],
       default: Any, help: str, **kw: Any) -> Setting:
    return Setting(name, section, flags, validate, default, " ".join(help.split()), **kw)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

SETTINGS: list[Setting] = [
    _s("config", "Config file", ("-c", "--config"), optional_string, None,
       """A Python config file (``path/to/prefork.conf.py``) or module
       (``python:package.module``) whose module-level names set settings and server
       hooks. Defaults to ``./prefork.conf.py`` when that file exists, else to
       ``./gunicorn.conf.py`` when that one does. Command-line options and
       ``PREFORK_CMD_ARGS`` override values from the file. Running as root, a file
       found in the current directory is refused (one line, exit status 2) when it is
       owned by another user or writable by its group or others, since whoever can
       write it could run code as root; a file named with ``-c`` is run, with a
       warning.""",
       example="-c /etc/prefork/prefork.conf.py", metavar="CONFIG",
       default_doc="./prefork.conf.py, else ./gunicorn.conf.py, if it exists", from_file=False,
       short="A Python config file, or python:MODULE."),
    _s("bind", "Server socket", ("-b", "--bind"), bind_list, default_bind,
       """Where to listen: ``HOST:PORT``, ``[IPV6]:PORT``, ``unix:PATH`` or ``fd://N``
       (an already-open listening socket, e.g. from a supervisor). Repeat the flag to
       listen in several places. Defaults to ``127.0.0.1:8000``, or ``0.0.0.0:$PORT``
       when the ``PORT`` environment variable is set.""",
       example="-b 0.0.0.0:8000 -b unix:/run/app.sock", metavar="ADDRESS", multiple=True,
       default_doc="127.0.0.1:8000 (0.0.0.0:$PORT if PORT is set)",
       short="Where to listen: HOST:PORT, unix:PATH or fd://N; repeatable.", env="PORT"),
    _s("backlog", "Server socket", ("--backlog",), positive_int, 2048,
       """The listen queue length: how many connections the kernel holds for the
       workers to accept. Also capped by ``net.core.somaxconn``.""",
       example="--backlog 4096", metavar="INT",
       short="How many connections may wait to be accepted."),
    _s("workers", "Worker processes", ("-w", "--workers"), positive_int, default_workers,
       """How many worker processes serve requests. Each handles one request at a
       time, so this is the number of requests served concurrently. Defaults to 1, or
       ``$WEB_CONCURRENCY`` when set. A common start is 2-4 per CPU core.""",
       example="-w 4", metavar="INT", default_doc="1 ($WEB_CONCURRENCY if set)",
       short="How many worker processes serve requests.", env="WEB_CONCURRENCY"),
    _s("worker_class", "Worker processes", ("-k", "--worker-class"), worker_class_name, "sync",
       """The kind of worker process that serves requests. ``sync`` workers serve one
       request at a time each, and are the fastest for CPU-bound applications.
       ``gthread`` workers serve up to ``--threads`` requests at once on a pool of
       threads, and keep idle keep-alive connections in a selector, where they take no
       thread: for applications that wait on I/O. ``--threads`` above 1 selects
       ``gthread``, as in Gunicorn (with ``-k sync`` too, with a warning). Any other value stops prefork with a
       one-line message saying what to use instead: Gunicorn's async classes
       (``gevent``, ``eventlet``, ``tornado``) are not available (use ``gthread``), and
       ASGI worker classes (``uvicorn.workers.UvicornWorker``) or any other class path
       cannot be loaded, because prefork serves WSGI applications.""",
       example="-k gthread", metavar="CLASS",
       short="The kind of worker process: sync or gthread."),
    _s("threads", "Worker processes", ("--threads",), positive_int, 1,
       """Threads per worker for the gthread worker class (``-k gthread``): each
       worker serves up to this many requests at once, and parks idle keep-alive
       connections in a selector, where they take no thread. More than 1 selects
       gthread, as in Gunicorn, even with ``-k sync``. Use it when requests wait on I/O (a
       database, an upstream API); CPU-bound applications want more workers instead.""",
       example="--threads 8", metavar="INT",
       short="Threads per gthread worker (more than 1 selects gthread)."),
    _s("worker_connections", "Worker processes", ("--worker-connections",), positive_int, 1000,
       """The most connections one gthread worker holds at once, busy and idle
       keep-alive ones together. At the limit, the connection that has been idle the
       longest is closed to make room for a new one. The sync worker holds one.""",
       example="--worker-connections 2000", metavar="INT",
       short="The most connections a gthread worker holds, idle ones included."),
    _s("timeout", "Worker processes", ("-t", "--timeout"), nonneg_float, 30.0,
       """A worker that has not checked in for this many seconds (stuck in a request
       or anywhere else) is killed and replaced. 0 disables the check.""",
       example="-t 60", metavar="SECONDS",
       short="Replace a worker silent for this many seconds (0: never)."),
    _s("boot_timeout", "Worker processes", ("--boot-timeout",), nonneg_float, 120.0,
       """How long a worker may take to import and build the application before it
       is considered stuck and killed. Separate from ``--timeout`` so that a slow
       import is not mistaken for a stuck request. At the first start, a boot
       timeout stops the server (exit status 1), as an import error does. 0
       disables the check.""",
       example="--boot-timeout 300", metavar="SECONDS",
       short="How long a worker may take to load the application."),
    _s("graceful_timeout", "Worker processes", ("--graceful-timeout",), nonneg_float, 30.0,
       """On a graceful stop, how long in-flight requests may run before their
       workers are killed.""",
       example="--graceful-timeout 10", metavar="SECONDS",
       short="How long requests may run on a graceful stop."),
    _s("worker_tmp_dir", "Worker processes", ("--worker-tmp-dir",), optional_dir, None,
       """The directory for the workers' heartbeat files. The files are unlinked as
       soon as they are opened, so nothing is left behind. Defaults to ``/dev/shm``
       when it exists (memory-backed), else the system temporary directory. A
       directory where the master cannot create and allocate such a file (read-only,
       full, ``/proc``) stops the server at start with one line and exit status 1.""",
       example="--worker-tmp-dir /dev/shm", metavar="DIR",
       default_doc="/dev/shm if present, else $TMPDIR",
       short="Where the workers' heartbeat files are made."),
    _s("chdir", "Server mechanics", ("--chdir",), optional_dir, None,
       """Change to this directory before loading the application.""",
       example="--chdir /srv/app", metavar="DIR", default_doc="the current directory",
       short="Change to this directory before loading the application."),
    _s("pythonpath", "Server mechanics", ("--pythonpath",), optional_string, None,
       """Comma-separated directories to put in front of ``sys.path`` before loading
       the application.""",
       example="--pythonpath /srv/app,/srv/lib", metavar="DIRS",
       short="Directories to put in front of sys.path, comma-separated."),
    _s("proc_name", "Server mechanics", ("-n", "--name", "--proc-name"), optional_string, None,
       """The name shown in process titles (``prefork: master [NAME]``). Defaults to
       the application module.""",
       example="-n shop-api", metavar="NAME", default_doc="the APP_MODULE",
       short="The name shown in process titles."),
    _s("loglevel", "Logging", ("--log-level",), choice(*LOG_LEVELS), "info",
       """The least severe level written to the error log: debug, info, warning,
       error or critical.""",
       example="--log-level debug", metavar="LEVEL",
       short="The least severe level written to the error log."),
    _s("errorlog", "Logging", ("--error-logfile", "--log-file"), string, "-",
       """Where the error log goes: a file path, or ``-`` for standard error.""",
       example="--error-logfile /var/log/prefork/error.log", metavar="FILE",
       short="Where the error log goes: a file, or - for standard error."),
    _s("accesslog", "Logging", ("--access-logfile",), optional_string, None,
       """Where the access log goes: a file path, or ``-`` for standard output. Off by
       default; when off, no work at all is done to format access lines.""",
       example="--access-logfile -", metavar="FILE", default_doc="off",
       short="Where the access log goes: a file, or - for standard output."),

    # ----- HTTP protocol: limits, keep-alive, header handling -----
    _s("limit_request_line", "HTTP protocol", ("--limit-request-line",), nonneg_int, 8190,
       """The longest request line (method, target and version, without its CRLF)
       accepted, in bytes; a longer one is answered ``414 URI Too Long``. The default
       follows RFC 9112 §3, which asks servers to support request lines of at least
       8000 octets; Gunicorn's default, 4094, refuses real-world URLs with long query
       strings. 0 means no limit of its own (the whole request head stays bounded, see
       ``docs/http.md``). Unlike Gunicorn, values above 8190 are allowed.""",
       example="--limit-request-line 16384", metavar="BYTES",
       short="The longest request line accepted, in bytes."),
    _s("limit_request_fields", "HTTP protocol", ("--limit-request-fields",), nonneg_int, 100,
       """The most header fields a request may have; more are answered ``431 Request
       Header Fields Too Large``. 0 means no limit of its own.""",
       example="--limit-request-fields 200", metavar="INT",
       short="The most header fields a request may have."),
    _s("limit_request_field_size", "HTTP protocol",
       ("--limit-request-field_size", "--limit-request-field-size"), nonneg_int, 8190,
       """The largest header field line a request may have, in bytes, counted as
       Gunicorn counts it: the whole line as received, with its CRLF; a larger one is
       answered ``431 Request Header Fields Too Large``. 0 means no limit of its own.
       The flag is spelled as in Gunicorn; ``--limit-request-field-size`` is accepted
       too.""",
       example="--limit-request-field_size 16380", metavar="BYTES",
       short="The largest header field accepted, in bytes."),
    _s("limit_request_body", "HTTP protocol", ("--limit-request-body",), nonneg_int, 0,
       """The largest request body accepted, in bytes. A larger ``Content-Length`` is
       answered ``413 Content Too Large`` before the application is called, and a chunked
       body that grows past the limit is cut off with ``413``. 0 means no limit (the
       application decides, as with Gunicorn). Like nginx's ``client_max_body_size``.""",
       example="--limit-request-body 10485760", metavar="BYTES", default_doc="0 (no limit)",
       short="The largest request body accepted, in bytes."),
    _s("keepalive", "HTTP protocol", ("--keep-alive",), nonneg_float, 2,
       """How many seconds an idle persistent (keep-alive) connection is kept open
       for its client's next request. A kept connection is closed only by its client,
       after this long idle, or after a response that said ``Connection: close``. A
       sync worker says ``close`` when another client waits to be accepted, and serves
       newcomers while its kept connections are idle; a gthread worker parks them in a
       selector (see ``docs/workers.md``). 0 disables keep-alive: every response
       closes its connection, as Gunicorn's sync worker does.""",
       example="--keep-alive 5", metavar="SECONDS",
       short="Seconds to wait for the next request on a connection."),
    _s("header_timeout", "HTTP protocol", ("--header-timeout",), nonneg_float, 10.0,
       """How long a client may take to send a request head (the request line and
       every header field), counted from the moment its connection is accepted or, on a
       kept-alive connection, from the first byte of its next request. A client that is
       not done by then is answered ``408 Request Timeout`` and disconnected. A sync
       worker serves one connection at a time, so this bounds how long a slow or
       malicious client (slowloris) can keep a worker from everyone else. A head is
       usually one packet, so 10 s leaves ample room for a poor mobile link. For comparison,
       Apache httpd's ``mod_reqtimeout`` allows 20 s (up to 40 s while data keeps
       coming), and nginx's ``client_header_timeout`` 60 s, where a waiting client
       holds no process; Gunicorn has no such deadline. 0 disables it.""",
       example="--header-timeout 5", metavar="SECONDS",
       short="Seconds a client may take to send a request head (then 408)."),
    _s("header_map", "HTTP protocol", ("--header-map",), choice("drop", "refuse", "dangerous"),
       "drop",
       """What to do with request header names that contain ``_``. In the WSGI environ
       ``X-Forwarded-For`` and ``X_Forwarded_For`` would both become
       ``HTTP_X_FORWARDED_FOR``, so a client could spoof a header a proxy sets. ``drop``
       (the default) leaves such headers out of the environ, ``refuse`` answers the
       request with ``400``, ``dangerous`` passes them on (both spellings are then joined
       with a comma).""",
       example="--header-map refuse", metavar="drop|refuse|dangerous",
       short="What to do with header names that contain an underscore."),
    _s("http_parser", "HTTP protocol", ("--http-parser",), http_parser, "python",
       """Which parser reads request heads. ``python`` (the default) is prefork's own
       pure-Python parser. ``httptools`` has the header section checked by llhttp, the C
       parser of Node.js, through the optional ``httptools`` package (``pip install
       'prefork[httptools]'``), and keeps every other rule, limit and error of the default
       parser; it is slightly stricter (see ``docs/http.md``). Request bodies are read the
       same way with either.""",
       example="--http-parser httptools", metavar="python|httptools",
       short="Which parser reads request heads."),
    # ----- end of HTTP protocol settings -----

    # ----- Process supervision: signals, recycling, hooks, process settings -----
    _s("max_requests", "Worker processes", ("--max-requests",), nonneg_int, 0,
       """A worker that has served this many requests is replaced, to contain memory
       leaks in the application. The replacement is started and ready *before* the old
       worker stops, so recycling never lowers capacity. 0 disables recycling.""",
       example="--max-requests 10000", metavar="INT",
       short="Replace a worker after this many requests (0: never)."),
    _s("max_requests_jitter", "Worker processes", ("--max-requests-jitter",), nonneg_int, 0,
       """A random number between 0 and this is added to ``--max-requests`` for each
       worker, so that workers started together are not all replaced together.""",
       example="--max-requests-jitter 1000", metavar="INT",
       short="Add a random 0 to N to --max-requests for each worker."),
    _s("workers_max", "Worker processes", ("--workers-max",), nonneg_int, 0,
       """Let prefork add workers, one at a time, up to this many, when the ones it has
       are saturated: every worker busy, or connections waiting in the listen queue,
       for a second in a row. ``-w`` stays the minimum. Workers are taken away again,
       one at a time and gracefully, after ``--scale-down-after`` seconds with spare
       capacity. Every decision is logged with its inputs. 0 (the default) keeps the
       count fixed. See ``docs/workers.md``.""",
       example="--workers-max 8", metavar="INT",
       short="Add workers up to this many when all are busy (0: fixed)."),
    _s("scale_down_after", "Worker processes", ("--scale-down-after",), positive_float, 30.0,
       """With ``--workers-max``: a worker above the minimum is removed once the pool
       has had at least two idle workers and no connection waiting for this many
       seconds in a row.""",
       example="--scale-down-after 60", metavar="SECONDS",
       short="Remove an extra worker after this long with spare capacity."),
    _s("workers_max_memory", "Worker processes", ("--workers-max-memory",), nonneg_int, 0,
       """With ``--workers-max``: never add a worker when the workers' total memory
       (PSS) plus one more worker of their average size would pass this many MiB.
       0: no budget.""",
       example="--workers-max-memory 4096", metavar="MiB",
       short="Add no worker that would take their memory past this (MiB)."),
    _s("max_worker_lifetime", "Worker processes", ("--max-worker-lifetime",), nonneg_float, 0.0,
       """A worker that has lived this many seconds is replaced the way ``--max-requests``
       replaces one: its replacement is started and ready first, then the old worker
       announces ``Connection: close`` and exits once idle, so no client sees a reset.
       Workers past their lifetime are replaced one at a time. Use it for leaks that grow
       with time rather than with requests, or to spread a slow drift (caches, sockets
       to a database that moved). 0 disables it. See ``docs/recycling.md``.""",
       example="--max-worker-lifetime 3600", metavar="SECONDS",
       short="Replace a worker after it has lived this long (0: never)."),
    _s("max_worker_lifetime_jitter", "Worker processes", ("--max-worker-lifetime-jitter",),
       nonneg_float, 0.0,
       """A random number of seconds between 0 and this is added to
       ``--max-worker-lifetime`` for each worker, so that workers started together are not
       all replaced together.""",
       example="--max-worker-lifetime-jitter 300", metavar="SECONDS",
       short="Add a random 0 to N seconds to each worker's lifetime."),
    _s("max_worker_memory", "Worker processes", ("--max-worker-memory",), nonneg_int, 0,
       """A worker whose memory stays above this many MiB is replaced gracefully: the
       master reads each worker's proportional set size (PSS, from
       ``/proc/PID/smaps_rollup``; the resident set size where that file is missing)
       once a second, and after 3 samples in a row above the limit starts a
       replacement, then retires the worker once the replacement is ready. The worker
       finishes its current request and announces ``Connection: close``. Each
       replacement is logged with the worker, its memory and the limit. Linux only
       (elsewhere it is ignored, with a warning). 0 disables it. See
       ``docs/recycling.md``.""",
       example="--max-worker-memory 512", metavar="MiB",
       short="Replace a worker whose memory stays above this many MiB."),
    _s("max_worker_memory_hard", "Worker processes", ("--max-worker-memory-hard",), nonneg_int, 0,
       """A worker whose memory is above this many MiB at any sample is killed with
       ``SIGKILL`` at once (after a log line), whatever it is doing: the backstop for a
       worker that keeps growing while it waits for its replacement or finishes its
       graceful exit. Requests in progress in that worker fail. Set it well above
       ``--max-worker-memory``, which it must exceed. 0 disables it.""",
       example="--max-worker-memory-hard 1024", metavar="MiB",
       short="Kill a worker whose memory passes this many MiB."),
    _s("preload_app", "Server mechanics", ("--preload",), boolean, False,
       """Import the application in the master before forking the workers. The workers
       share its memory copy-on-write (the master calls ``gc.freeze()`` first so the
       garbage collector does not un-share it) and start faster. A ``HUP`` then cannot
       load new application code: use ``USR2`` to upgrade.""",
       example="--preload", is_flag=True,
       short="Import the application in the master, before forking."),
    _s("reload", "Server mechanics", ("--reload",), boolean, False,
       """For development: restart the workers when the application's code changes.
       The master watches the source files of the modules the workers imported while
       loading the application, and the ``--reload-extra-file`` files; within about a
       second of a save it starts a new generation of workers, as ``HUP`` does, and
       retires the old ones once the new ones are ready. New code that fails to import
       (a syntax error, a missing module) is logged once with its file and line, and
       the old workers keep serving until the file is fixed. Cannot be combined with
       ``--preload``. See ``docs/workers.md``.""",
       example="--reload", is_flag=True,
       short="Restart the workers when the application's code changes."),
    _s("reload_engine", "Server mechanics", ("--reload-engine",), reload_engine, "auto",
       """How ``--reload`` notices changes. ``inotify`` is told by the kernel, through the
       optional ``watchfiles`` package (``pip install 'prefork[reload]'``); ``poll``
       looks at each watched file's modification time twice a second; ``auto`` (the
       default) uses ``inotify`` when ``watchfiles`` is installed, else ``poll``.""",
       example="--reload-engine poll", metavar="auto|poll|inotify",
       short="How --reload notices changes: auto, poll or inotify."),
    _s("reload_extra_files", "Server mechanics", ("--reload-extra-file",), string_list,
       lambda env: [],
       """With ``--reload``, also restart the workers when this file changes: a template,
       a data or settings file the application reads at start. Repeatable. A relative
       path is taken from the directory prefork starts in (not ``--chdir``). A file that
       does not exist yet is watched for its creation (by ``poll``; ``inotify`` needs
       its directory to exist).""",
       example="--reload-extra-file templates/index.html", metavar="FILE", multiple=True,
       default_doc="none",
       short="With --reload, also watch this file; repeatable."),
    _s("shutdown_delay", "Worker processes", ("--shutdown-delay",), nonneg_float, 0.0,
       """On ``TERM``, keep serving normally for this many seconds before the graceful
       stop begins: the time a load balancer or a Kubernetes endpoint controller needs
       to stop sending new traffic.""",
       example="--shutdown-delay 5", metavar="SECONDS",
       short="On TERM, keep serving this many seconds before stopping."),
    _s("upgrade_auto", "Server mechanics", ("--upgrade-auto",), boolean, False,
       """After a ``USR2`` binary upgrade, the new master stops the old one (graceful
       ``TERM``) as soon as its own workers are ready: a zero-downtime upgrade with a
       single signal. Without it, the old master keeps running until you stop it.""",
       example="--upgrade-auto", is_flag=True,
       short="After a USR2 upgrade, stop the old master once ready."),
    _s("pidfile", "Server mechanics", ("-p", "--pid"), optional_string, None,
       """Write the master's pid to this file (atomically), and remove it on exit. A
       file left by a dead server is replaced; one naming a running prefork master is
       an error.""",
       example="--pid /run/prefork.pid", metavar="FILE",
       short="Write the master's pid to this file."),
    _s("user", "Server mechanics", ("-u", "--user"), user_id, None,
       """Run the workers as this user (name or uid). The master keeps its identity so
       it can bind privileged ports and signal the workers.""",
       example="--user www-data", metavar="USER", default_doc="the current user",
       short="Run the workers as this user."),
    _s("group", "Server mechanics", ("-g", "--group"), group_id, None,
       """Run the workers with this group (name or gid).""",
       example="--group www-data", metavar="GROUP", default_doc="the current group",
       short="Run the workers with this group."),
    _s("umask", "Server mechanics", ("-m", "--umask"), umask, None,
       """The file mode creation mask of the server (octal), which also decides the
       permissions of unix sockets it creates.""",
       example="--umask 007", metavar="MASK", default_doc="inherited",
       short="The file mode creation mask, in octal."),
    _s("daemon", "Server mechanics", ("-D", "--daemon"), boolean, False,
       """Detach from the terminal and run in the background (double fork, new
       session, standard streams on ``/dev/null``). Use ``--pid`` to find the master and
       ``--error-logfile`` to keep its log. Not needed under systemd or in containers.""",
       example="--daemon --pid /run/prefork.pid", is_flag=True,
       short="Detach from the terminal and run in the background."),
    _s("raw_env", "Server mechanics", ("-e", "--env"), env_pairs, lambda env: [],
       """Set an environment variable for the application: ``KEY=VALUE``. Repeatable.""",
       example="-e DJANGO_SETTINGS_MODULE=site.settings", metavar="KEY=VALUE", multiple=True,
       default_doc="none",
       short="Set an environment variable for the application; repeatable."),
    _s("on_starting", "Server hooks", (), hook(1), None,
       """``on_starting(server)``: In the master, once, before the listening sockets are created.""",
       example="def on_starting(server): ...", default_doc="none"),
    _s("on_reload", "Server hooks", (), hook(1), None,
       """``on_reload(server)``: In the master, when a ``HUP`` begins a reload (after the config file is re-read).""",
       example="def on_reload(server): ...", default_doc="none"),
    _s("when_ready", "Server hooks", (), hook(1), None,
       """``when_ready(server)``: In the master, when the first generation of workers has booted and the server is ready (when systemd is told ``READY=1``).""",
       example="def when_ready(server): ...", default_doc="none"),
    _s("pre_fork", "Server hooks", (), hook(2), None,
       """``pre_fork(server, worker)``: In the master, just before a worker is forked.""",
       example="def pre_fork(server, worker): ...", default_doc="none"),
    _s("post_fork", "Server hooks", (), hook(2), None,
       """``post_fork(server, worker)``: In the new worker, just after the fork, before the application is loaded.""",
       example="def post_fork(server, worker): ...", default_doc="none"),
    _s("post_worker_init", "Server hooks", (), hook(1), None,
       """``post_worker_init(worker)``: In the worker, after the application is loaded and before the worker reports ready.""",
       example="def post_worker_init(worker): ...", default_doc="none"),
    _s("worker_int", "Server hooks", (), hook(1), None,
       """``worker_int(worker)``: In the worker, when it receives ``INT`` or ``QUIT`` (quick stop).""",
       example="def worker_int(worker): ...", default_doc="none"),
    _s("worker_abort", "Server hooks", (), hook(1), None,
       """``worker_abort(worker)``: In the worker, when it receives ``ABRT`` because its heartbeat timed out.""",
       example="def worker_abort(worker): ...", default_doc="none"),
    _s("pre_exec", "Server hooks", (), hook(1), None,
       """``pre_exec(server)``: In the new master process of a ``USR2`` upgrade, just before it executes the new binary.""",
       example="def pre_exec(server): ...", default_doc="none"),
    _s("pre_request", "Server hooks", (), hook(2), None,
       """``pre_request(worker, req)``: In the worker, before the application is called for a request.""",
       example="def pre_request(worker, req): ...", default_doc="none"),
    _s("post_request", "Server hooks", (), hook(4), None,
       """``post_request(worker, req, environ, resp)``: In the worker, after a request has been answered.""",
       example="def post_request(worker, req, environ, resp): ...", default_doc="none"),
    _s("child_exit", "Server hooks", (), hook(2), None,
       """``child_exit(server, worker)``: In the master, after a worker has exited and been reaped.""",
       example="def child_exit(server, worker): ...", default_doc="none"),
    _s("worker_exit", "Server hooks", (), hook(2), None,
       """``worker_exit(server, worker)``: In the worker, just before it exits.""",
       example="def worker_exit(server, worker): ...", default_doc="none"),
    _s("nworkers_changed", "Server hooks", (), hook(3), None,
       """``nworkers_changed(server, new_value, old_value)``: In the master, when the number of workers changes (``TTIN``, ``TTOU``, or a config reload); ``old_value`` is None the first time.""",
       example="def nworkers_changed(server, new_value, old_value): ...", default_doc="none"),
    _s("on_exit", "Server hooks", (), hook(1), None,
       """``on_exit(server)``: In the master, just before it exits.""",
       example="def on_exit(server): ...", default_doc="none"),

    # ----- end of process supervision settings -----

    # ----- Configuration and logging -----
    _s("wsgi_app", "Config file", (), optional_string, None,
       """The application, as in the APP_MODULE argument (``module:callable``), for
       a config file to name it. The APP_MODULE argument, when given, wins.""",
       example='wsgi_app = "myproject.wsgi:application"', default_doc="none"),
    _s("print_config", "Config file", ("--print-config",), boolean, False,
       """Print the effective value of every setting, and where it came from (default,
       config file and line, environment variable or command line), then exit.""",
       example="--print-config", is_flag=True, from_file=False,
       short="Print every setting's value and source, then exit."),
    _s("check_config", "Config file", ("--check-config",), boolean, False,
       """Load the configuration, check that ``--worker-tmp-dir`` can hold the
       heartbeat files, and import the application, then exit: status 0 if all is
       fine, 2 for a bad setting, 1 if the heartbeat files or the application cannot
       be made or loaded. For a CI step or a systemd ``ExecStartPre``.""",
       example="--check-config", is_flag=True, from_file=False,
       short="Check the settings and import the application, then exit."),
    _s("access_log_format", "Logging", ("--access-logformat",), access_log_format,
       DEFAULT_ACCESS_LOG_FORMAT,
       """The format of access-log lines, with Gunicorn's atoms, each written
       ``%(NAME)s``: ``h l u t r m U q H s B b f a T M D L p``, ``{header}i``,
       ``{header}o`` and ``{variable}e`` (docs/logging.md says what each is). The
       default is Gunicorn's, so existing log parsers keep working. Not used with
       ``--log-format json``.""",
       example="--access-logformat '%(h)s \"%(r)s\" %(s)s %(D)s'", metavar="FORMAT",
       short="The format of access-log lines, with Gunicorn's atoms."),
    _s("log_format", "Logging", ("--log-format",), choice("text", "json"), "text",
       """``text`` writes the usual lines; ``json`` writes both logs as one JSON object
       per line, with stable field names (see docs/logging.md), for log pipelines.""",
       example="--log-format json", metavar="text|json",
       short="Write both logs as text lines or as JSON objects."),
    _s("capture_output", "Logging", ("--capture-output",), boolean, False,
       """Send what the application prints (its standard output and standard error)
       into the error log: the error-log file, or standard error when the error log
       is ``-``.""",
       example="--capture-output", is_flag=True,
       short="Send the application's stdout and stderr to the error log."),
    _s("logconfig", "Logging", ("--log-config",), optional_file, None,
       """A ``logging.config`` INI file applied after prefork's own logging setup, for
       full control of handlers and formats. Configure the loggers ``prefork.error``
       and ``prefork.access`` (or Gunicorn's ``gunicorn.error`` and
       ``gunicorn.access``).""",
       example="--log-config /etc/prefork/logging.ini", metavar="FILE", default_doc="none",
       short="A logging.config INI file, applied after prefork's setup."),
    _s("logconfig_dict", "Logging", ("--log-config-dict",), log_config_dict, None,
       """A ``logging.config.dictConfig`` dictionary (JSON text on the command line),
       applied after prefork's own setup. As in Gunicorn, ``version`` defaults to 1,
       existing loggers are kept, and the formatter ``generic`` and the handlers
       ``console`` (standard output) and ``error_console`` (standard error) are
       predefined.""",
       example=('--log-config-dict \'{"formatters": {"short": {"format": "%(levelname)s '
                '%(message)s"}}, "handlers": {"err": {"class": "logging.StreamHandler", '
                '"formatter": "short"}}, "loggers": {"prefork.error": {"handlers": ["err"]}}}\''),
       metavar="JSON", default_doc="none",
       short="A logging.config dictionary, as JSON text."),
    _s("logconfig_json", "Logging", ("--log-config-json",), optional_file, None,
       """A JSON file holding a ``logging.config.dictConfig`` dictionary; read like
       ``--log-config-dict``.""",
       example="--log-config-json /etc/prefork/logging.json", metavar="FILE",
       default_doc="none",
       short="A JSON file holding a logging.config dictionary."),

    # ----- end of configuration and logging settings -----

    # ----- Deployment: systemd, proxies, TLS -----
    _s("forwarded_allow_ips", "Reverse proxies", ("--forwarded-allow-ips",), ip_networks,
       default_forwarded_allow_ips,
       """The proxies trusted to say who the client is: comma-separated IP addresses
       or networks (``10.0.0.0/8``), or ``*`` to trust any peer. Only on connections
       from these addresses are ``X-Forwarded-For``, ``Forwarded`` and the
       ``secure_scheme_headers`` used to set ``REMOTE_ADDR`` and ``wsgi.url_scheme``;
       from anyone else they are passed to the application as ordinary headers.
       Connections on a unix socket are always trusted: only local processes with
       access to the socket file can make them. Defaults to ``$FORWARDED_ALLOW_IPS``
       when set, as in Gunicorn.""",
       example="--forwarded-allow-ips 10.0.0.0/8,192.168.1.5", metavar="IPS",
       default_doc="127.0.0.1,::1 ($FORWARDED_ALLOW_IPS if set)",
       short="The proxies trusted to say who the client is.", env="FORWARDED_ALLOW_IPS"),
    _s("secure_scheme_headers", "Reverse proxies", (), header_values,
       {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"},
       """Config file only. The headers, and their exact values, by which a trusted
       proxy (see ``forwarded_allow_ips``) says the client used HTTPS; a match sets
       ``wsgi.url_scheme`` to ``https``, a listed header with another value sets it to
       ``http``. Header names are case-insensitive, values case-sensitive. Two listed
       headers that disagree make the request a ``400``. Your proxy must overwrite
       these headers, never pass on the client's.""",
       example='secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}',
       default_doc="X-FORWARDED-PROTOCOL: ssl, X-FORWARDED-PROTO: https, X-FORWARDED-SSL: on"),
    _s("proxy_protocol", "Reverse proxies", ("--proxy-protocol",), boolean, False,
       """Expect a PROXY protocol header (version 1 or 2, as sent by HAProxy's
       ``send-proxy``, AWS NLB, stunnel) at the start of every connection from the
       peers in ``--proxy-allow-from``; its client address becomes ``REMOTE_ADDR``. A
       missing or malformed header closes the connection. Connections from other peers
       are plain HTTP, and a PROXY header from them is never believed.""",
       example="--proxy-protocol --proxy-allow-from 10.0.0.0/8", is_flag=True,
       short="Expect a PROXY protocol header from --proxy-allow-from."),
    _s("proxy_allow_ips", "Reverse proxies", ("--proxy-allow-from",), ip_networks,
       lambda env: ["127.0.0.1", "::1"],
       """The peers that must send a PROXY protocol header when ``--proxy-protocol``
       is on: comma-separated IP addresses or networks, or ``*`` for any peer. Unix
       socket connections always count as allowed.""",
       example="--proxy-allow-from 10.0.0.0/8", metavar="IPS", default_doc="127.0.0.1,::1",
       short="The peers that send a PROXY protocol header."),
    _s("certfile", "TLS", ("--certfile",), readable_file("certificate file"), None,
       """Serve HTTPS on every listener with this PEM certificate (followed by its
       intermediate certificates). The master loads it at start, so a bad certificate
       stops the server with a one-line error, and the workers never need to read it
       (it may be readable by root only). ``HUP`` loads it again: renewed certificates
       need no restart.""",
       example="--certfile /etc/ssl/example.com/fullchain.pem", metavar="FILE", default_doc="off",
       short="Serve HTTPS with this PEM certificate (and its chain)."),
    _s("keyfile", "TLS", ("--keyfile",), readable_file("key file"), None,
       """The PEM private key of ``--certfile``, if it is not in the certificate file.""",
       example="--keyfile /etc/ssl/example.com/privkey.pem", metavar="FILE",
       default_doc="the key in --certfile",
       short="The PEM private key of --certfile."),
    _s("ca_certs", "TLS", ("--ca-certs",), readable_file("CA certificates file"), None,
       """PEM certificates of the authorities that sign client certificates, for
       ``--cert-reqs 1`` or ``2``.""",
       example="--ca-certs /etc/ssl/clients-ca.pem", metavar="FILE", default_doc="none",
       short="The authorities that sign client certificates (PEM)."),
    _s("cert_reqs", "TLS", ("--cert-reqs",), cert_reqs, 0,
       """Client certificates: ``0`` not asked for, ``1`` verified if the client
       sends one, ``2`` required (the handshake fails without a valid one). ``1`` and
       ``2`` need ``--ca-certs``. The application sees the verified certificate's subject
       in ``SSL_CLIENT_S_DN`` and the whole ``getpeercert()`` dict in
       ``environ["prefork.peer_certificate"]``.""",
       example="--cert-reqs 2 --ca-certs /etc/ssl/clients-ca.pem", metavar="0|1|2",
       short="Client certificates: 0 not asked, 1 optional, 2 required."),
    _s("ciphers", "TLS", ("--ciphers",), cipher_list, None,
       """The TLS 1.2 cipher suites to allow, as an OpenSSL cipher list. Defaults to
       Python's list of strong ciphers. TLS 1.3 suites are not affected.""",
       example="--ciphers ECDHE+AESGCM:ECDHE+CHACHA20", metavar="CIPHERS",
       default_doc="Python's default",
       short="The TLS 1.2 cipher suites to allow, as an OpenSSL list."),
    _s("ssl_version", "TLS", ("--ssl-version",), ssl_version, "TLS",
       """The oldest TLS version accepted: ``TLSv1_2``, ``TLSv1_3`` (or the legacy
       ``TLSv1``, ``TLSv1_1``, which your OpenSSL may refuse anyway). The newest version
       both sides support is always negotiated. ``TLS`` (Gunicorn's default, also
       ``SSLv23`` and the ``ssl.PROTOCOL_*`` numbers) keeps Python's minimum, TLS 1.2.""",
       example="--ssl-version TLSv1_3", metavar="VERSION", default_doc="TLS (TLS 1.2 or newer)",
       short="The oldest TLS version accepted."),
    _s("do_handshake_on_connect", "TLS", ("--do-handshake-on-connect",), boolean, False,
       """Accepted for Gunicorn compatibility. prefork always completes the TLS
       handshake in the worker right after ``accept()``, within ``--timeout``, before
       reading the request; with a sync worker that is what either value amounts to.""",
       example="--do-handshake-on-connect", is_flag=True,
       short="For Gunicorn: the handshake is always done at accept."),

    # ----- end of deployment settings -----

    # ----- Performance options -----
    _s("reuse_port", "Server socket", ("--reuse-port",), boolean, False,
       """Linux: give every worker its own listening socket on each TCP address,
       all bound with ``SO_REUSEPORT``, so that the kernel spreads new connections
       across the workers by a hash of the client's address and port instead of
       handing each to whichever worker waits in ``accept()`` on a shared queue.
       The master only reserves the address (bound, not listening); a worker
       listens once its application has loaded. Each worker has its own listen
       queue, so a busy worker's queue can hold connections while another worker
       is idle; a worker that stops gracefully serves its queue before it closes
       the socket, but a connection that arrives between its last ``accept()``
       and the close, or whose handshake is under way then, is reset, and a
       worker that crashes or is killed loses its whole queue, unless the
       ``net.ipv4.tcp_migrate_req`` sysctl (Linux 5.14 or newer) is 1, which
       moves them to another worker (prefork warns at start when it is not).
       Unix sockets, ``fd://`` and systemd-activated sockets, and sockets
       inherited already listening keep one shared socket (with a warning), as
       does every address on other systems. See ``docs/deploy/scaling.md``.""",
       example="--reuse-port", is_flag=True,
       short="Linux: a SO_REUSEPORT listening socket for each worker."),

    # ----- end of performance settings -----

    # ----- Observability: metrics, control socket, statsd, request ids -----
    _s("metrics_bind", "Observability", ("--metrics-bind",), metrics_address, None,
       """Serve Prometheus metrics at ``http://ADDRESS/metrics``, from the master
       (``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:PATH``): request counts by status
       and method, a latency histogram, workers by state, the kernel's listen
       queues, restarts by reason, memory. The master answers scrapes itself,
       without ever blocking its loop, and only on this address; no request of the
       application goes through it. Keep it on a private address: it has no
       authentication. Port 0 picks a free port (logged). See
       ``docs/observability.md``.""",
       example="--metrics-bind 127.0.0.1:9100", metavar="ADDRESS", default_doc="off",
       short="Serve Prometheus metrics on this address (off by default)."),
    _s("control_socket", "Observability", ("--control-socket",), optional_string, None,
       """A unix socket on which the master takes commands from ``preforkctl``
       (``show workers``, ``show stats``, ``worker add 2``, ``reload``...). Only
       the socket's owner (the master's user) and root may use it: the master
       checks each client's uid (``SO_PEERCRED``). Created with
       ``--control-socket-mode`` (never replacing anything but a dead server's
       socket) and removed on exit. Off by default, unlike Gunicorn, which creates
       ``gunicorn.ctl`` in the working directory: a file appearing wherever the
       server happens to start is a surprise, and a risk in a shared directory.""",
       example="--control-socket /run/prefork/ctl.sock", metavar="PATH", default_doc="off",
       short="The unix socket preforkctl talks to (off by default)."),
    _s("control_socket_mode", "Observability", ("--control-socket-mode",), file_mode, 0o600,
       """The permissions of the control socket (octal). Whatever the mode, the
       master serves only clients running as its own user or as root.""",
       example="--control-socket-mode 660", metavar="MODE", default_doc="600",
       short="The control socket's permission bits."),
    _s("control_socket_disable", "Observability", ("--no-control-socket",), boolean, False,
       """No control socket, even if ``--control-socket`` or a config file sets one
       (Gunicorn's switch; prefork has none unless asked).""",
       example="--no-control-socket", is_flag=True,
       short="Open no control socket, whatever else says so."),
    _s("statsd_host", "Observability", ("--statsd-host",), statsd_address, None,
       """Send statsd metrics to this server (``HOST:PORT``, default port 8125, or
       ``unix:PATH`` for a datagram socket), with Gunicorn's names
       (``gunicorn.requests``, ``gunicorn.request.duration``,
       ``gunicorn.request.status.<code>``, ``gunicorn.workers``,
       ``gunicorn.log.<level>``), so existing dashboards keep working. Sending is
       fire-and-forget UDP: it never blocks or fails a request.""",
       example="--statsd-host localhost:8125", metavar="ADDRESS", default_doc="off",
       short="Send Gunicorn's statsd metrics to this address."),
    _s("statsd_prefix", "Observability", ("--statsd-prefix",), string, "",
       """A prefix for every statsd name (a dot is added), e.g. ``service.app``.""",
       example="--statsd-prefix service.app", metavar="PREFIX", default_doc="none",
       short="A prefix for every statsd metric name."),
    _s("dogstatsd_tags", "Observability", ("--dogstatsd-tags",), dogstatsd_tags, "",
       """DogStatsD tags added to every statsd line: comma-separated ``key:value``
       pairs.""",
       example="--dogstatsd-tags env:prod,app:shop", metavar="TAGS", default_doc="none",
       short="DogStatsD tags added to every statsd metric."),
    _s("enable_backlog_metric", "Observability", ("--enable-backlog-metric",), boolean, False,
       """With ``--statsd-host``, also send ``gunicorn.backlog``, the connections
       waiting in the listen queues, once a second (Linux). The Prometheus endpoint
       always has them, per listener.""",
       example="--enable-backlog-metric", is_flag=True,
       short="Also send the listen queue length to statsd."),
    _s("request_id_header", "Observability", ("--request-id-header",), request_id_header,
       "X-Request-ID",
       """Every request gets an id: the value of this request header when the peer
       is trusted (``--forwarded-allow-ips``) and the value is a plain token of at
       most 200 characters, else a new one. The application finds it in
       ``environ["prefork.request_id"]``, the response carries it in this header
       (unless the application set the header itself), and the access log has it
       as ``%({x-request-id}o)s`` and in JSON logs. ``off`` gives requests no id.""",
       example="--request-id-header X-Correlation-ID", metavar="HEADER|off",
       short="The request id header (from trusted proxies), or off."),
    # ----- end of observability settings -----
]

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
# The names a config file may use: each setting's own, and Gunicorn's where it differs.
BY_CONFIG_NAME: dict[str, Setting] = {
    **{s.gunicorn: s for s in SETTINGS if s.gunicorn}, **BY_NAME,
}


def unsupported_gunicorn_names() -> set[str]:
    """Gunicorn's settings that no setting of the table stands for (yet)."""
    from .compat import GUNICORN_SETTINGS

    return set(GUNICORN_SETTINGS) - set(BY_CONFIG_NAME)


class Config:
    """The effective settings: ``cfg.workers``, plus where each value came from."""

    def __init__(self, values: dict[str, Any], sources: dict[str, str], app_uri: str = "",
                 places: dict[str, str] | None = None) -> None:
        self._values = values
        self.sources = sources
        self.places = places or {}  # setting name -> how an error message names where it was set
        self.app_uri = app_uri or values.get("wsgi_app") or ""
        self.warnings: list[str] = []  # found while loading, logged once a logger exists
        self.notes: list[str] = []  # like warnings, about harmless settings: logged at debug

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str) -> Any:
        return self._values[name]

    def where(self, name: str) -> str:
        """Where ``name`` was set, as an error message names it (``file:line: name``)."""
        return self.places.get(name) or BY_NAME[name].option_name

    def items(self) -> list[tuple[str, Any]]:
        return [(s.name, self._values[s.name]) for s in SETTINGS]

    @property
    def addresses(self) -> list[Address]:
        return [parse_address(b) for b in self._values["bind"]]

    @property
    def title_name(self) -> str:
        return self._values["proc_name"] or self.app_uri


def validate_value(setting: Setting, value: Any, where: str) -> Any:
    """Validate ``value`` for ``setting``; ``where`` prefixes the error message."""
    try:
        return setting.validate(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


COMMAND_LINE = "command line"


@dataclass
class Layer:
    """Settings from one source: a config file, an environment variable, the CLI."""

    source: str
    values: dict[str, Any]
    path: str = ""  # the config file, if the layer is one
    lines: dict[str, int] = field(default_factory=dict)  # setting name -> line

    def where(self, setting: Setting) -> str:
        """How an error message names the setting in this source."""
        if self.path:
            line = self.lines.get(setting.name)
            return f"{self.path}:{line}: {setting.name}" if line else f"{self.path}: {setting.name}"
        name = setting.option_name if setting.flags else setting.name
        return name if self.source == COMMAND_LINE else f"{self.source}: {name}"

    def describe(self, setting: Setting) -> str:
        """Where the value of ``setting`` came from, for --print-config."""
        line = self.lines.get(setting.name)
        return f"{self.source}:{line}" if line else self.source


def build_config(layers: list[Layer], env: Mapping[str, str], app_uri: str = "") -> Config:
    """Merge layers, lowest precedence first, over the defaults. ``app_uri``, when
    given, is the APP_MODULE argument: it overrides ``wsgi_app``."""
    if app_uri:
        layers = [*layers, Layer(COMMAND_LINE, {"wsgi_app": app_uri})]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    places: dict[str, str] = {}
    for setting in SETTINGS:
        values[setting.name] = setting.default_value(env)
        sources[setting.name] = _default_source(setting, env, values[setting.name])
    for layer in layers:
        for name, value in layer.values.items():
            setting = BY_NAME[name]
            places[name] = layer.where(setting)
            values[name] = validate_value(setting, value, places[name])
            sources[name] = layer.describe(setting)
    cfg = Config(values, sources, places=places)
    if values["workers_max"] and values["workers_max"] < values["workers"]:
        raise ConfigError(f"{cfg.where('workers_max')}: {values['workers_max']} is fewer than "
                          f"--workers ({values['workers']})")
    soft, hard = values["max_worker_memory"], values["max_worker_memory_hard"]
    if soft and hard and hard <= soft:
        raise ConfigError(f"{cfg.where('max_worker_memory_hard')}: {hard} MiB must be above "
                          f"--max-worker-memory ({soft} MiB)")
    if values["threads"] > 1 and values["worker_class"] == "sync":
        # As in Gunicorn: sync workers with threads are the threaded worker.
        if sources["worker_class"] != "default":
            cfg.warnings.append(f"{cfg.where('worker_class')} is 'sync' with threads = "
                                f"{values['threads']}: using gthread, as Gunicorn does")
        values["worker_class"] = "gthread"
        sources["worker_class"] = f"--threads {values['threads']} ({sources['threads']})"
    return cfg


def _default_source(setting: Setting, env: Mapping[str, str], value: Any) -> str:
    """``default``, or the environment variable the default was taken from."""
    if not setting.env or setting.env not in env:
        return "default"
    unset = {k: v for k, v in env.items() if k != setting.env}
    if env[setting.env] or value != setting.default_value(unset):
        return f"environment variable {setting.env}"
    return "default"


# --- config files


def load_config_file(path: str, found: bool = False) -> tuple[Layer, list[str]]:
    """Run a Python config file; its module-level names that match settings set
    them. Returns the layer and warnings about names that set nothing.

    ``found``: the file was found in the working directory rather than named.
    Running as root, such a file is refused if someone else could have written
    it (see ``untrusted_reason``); a named one only gets a warning."""
    from .compat import IgnoredSetting

    warnings: list[str] = []
    if path.startswith("python:"):
        namespace, filename = _config_module(path[len("python:"):])
    else:
        namespace, filename = _exec_config_file(path, found, warnings)
    lines = _assignment_lines(filename) if filename else {}
    values: dict[str, Any] = {}
    value_lines: dict[str, int] = {}
    for name, value in namespace.items():
        # Private names, imports and constants (setting names are lower case)
        # are the file's own business.
        if name.startswith("_") or name != name.lower() or _is_imported(value, namespace):
            continue
        setting = BY_CONFIG_NAME.get(name)
        if setting is not None and setting.from_file:
            values[setting.name] = value
            if name in lines:
                value_lines[setting.name] = lines[name]
            continue
        line = lines.get(name)
        at = f"{filename or path}:{line}" if line else (filename or path)
        warnings.append(IgnoredSetting(f"{at}: {ignored_name_message(name)}", name, value))
    source = f"config file {filename or path}"
    return Layer(source, values, filename or path, value_lines), warnings


def ignored_name_message(name: str) -> str:
    """Why a name in a config file sets nothing."""
    import difflib

    setting = BY_CONFIG_NAME.get(name)
    if setting is not None:
        return (f"setting {name!r} cannot be set in a config file (use "
                f"{setting.option_name} on the command line); ignored")
    if name in unsupported_gunicorn_names():
        return gunicorn_unsupported_message(name)
    known = [s.name for s in SETTINGS if s.from_file]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown setting {name!r} ignored{hint}"


def gunicorn_unsupported_message(name: str, flag: str = "") -> str:
    from .compat import GUNICORN_SETTINGS

    what = f"option {flag} ({name})" if flag else f"setting {name!r}"
    note = GUNICORN_SETTINGS[name].note
    return f"Gunicorn {what} is not supported by prefork yet; ignored" + (f". {note}" if note else "")


def untrusted_reason(st: os.stat_result) -> str:
    """Why root should not run a file with this status ("" when it may, or when
    not running as root): owned by another user, or writable by group or others."""
    if os.geteuid() != 0:
        return ""
    reasons = []
    if st.st_uid not in (0, os.getuid()):
        import pwd

        try:
            owner = f"{pwd.getpwuid(st.st_uid).pw_name} (uid {st.st_uid})"
        except KeyError:
            owner = f"uid {st.st_uid}"
        reasons.append(f"it is owned by {owner}, not by root")
    writable = [who for who, bit in (("its group", 0o020), ("others", 0o002)) if st.st_mode & bit]
    if writable:
        reasons.append(f"it is writable by {' and '.join(writable)}")
    return ", and ".join(reasons)


def _exec_config_file(path: str, found: bool, warnings: list[str]) -> tuple[dict[str, Any], str]:
    filename = os.path.abspath(path)
    try:
        with open(filename, "rb") as f:
            # Judged on the open file, so that what is checked is what is run.
            reason = untrusted_reason(os.fstat(f.fileno()))
            if reason and found:
                raise ConfigError(f"refusing to run {filename}, found in the current directory, "
                                  f"as root: {reason}; fix its owner or mode, or name it with -c")
            if reason:
                warnings.append(f"{filename}: running this config file as root although {reason}")
            source = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    namespace: dict[str, Any] = {"__file__": filename, "__name__": "__config__"}
    try:
        exec(compile(source, filename, "exec"), namespace)
    except Exception as exc:
        raise ConfigError(f"{_error_location(exc, filename)}: error in config file: "
                          f"{type(exc).__name__}: {exc}") from None
    namespace.pop("__builtins__", None)
    return namespace, filename


def _config_module(name: str) -> tuple[dict[str, Any], str]:
    import importlib

    try:
        module = importlib.import_module(name)
    except Exception as exc:
        raise ConfigError(f"cannot import config module {name!r}: {type(exc).__name__}: {exc}") from None
    namespace = {k: v for k, v in vars(module).items() if not k.startswith("__")}
    filename = getattr(module, "__file__", None) or ""
    for key, value in list(namespace.items()):
        if getattr(value, "__module__", None) not in (None, name) and callable(value):
            namespace.pop(key)  # imported functions and classes
    return namespace, filename


def _error_location(exc: BaseException, filename: str) -> str:
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{filename}:{exc.lineno}"
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{filename}:{line}" if line else filename


def _is_imported(value: Any, namespace: dict[str, Any]) -> bool:
    """Modules, and functions or classes defined elsewhere, are not settings."""
    import types

    if isinstance(value, types.ModuleType):
        return True
    module = getattr(value, "__module__", None)
    return (isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType))
            and module is not None and module != namespace.get("__name__"))


def _assignment_lines(filename: str) -> dict[str, int]:
    """The line of the last top-level binding of each name in a config file."""
    import ast

    try:
        with open(filename, "rb") as f:
            tree = ast.parse(f.read(), filename)
    except (OSError, SyntaxError, ValueError):
        return {}
    lines: dict[str, int] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            lines[node.name] = node.lineno
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    lines[sub.id] = node.lineno
    return lines
