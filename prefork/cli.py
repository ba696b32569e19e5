# The ``prefork`` command. Its options are generated from the settings table;
# values are validated by the table's validators (not by click types) so the
# command line, the environment variable and config files give the same
# one-line messages. ``--help`` shows each setting's short sentence, grouped by
# the table's sections; ``--help-setting NAME`` prints the full paragraph.
#
# Exit status (docs/exit-codes.md): 2 for a bad setting or command line,
# including a worker class prefork does not have and an address that cannot be
# resolved; 1 for a failure at run time (a port in use, an application that
# cannot load); 0 otherwise.
from __future__ import annotations

import difflib
import os
import shlex
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from . import __version__
from .compat import FLAG, GUNICORN_FLAGS, GUNICORN_SETTINGS, VALUE, IgnoredSetting, harmless
from .reloader import check_settings as check_reload_settings
from .settings import (
    BY_CONFIG_NAME,
    COMMAND_LINE,
    SETTINGS,
    Config,
    ConfigError,
    Layer,
    Setting,
    build_config,
    gunicorn_unsupported_message,
    load_config_file,
)
from .tls import check_settings as check_tls_settings
from .workers import check_settings as check_worker_settings

EXIT_OK = 0
EXIT_FAILURE = 1  # at run time: a port in use, an application that cannot load
EXIT_BAD_SETTING = 2  # a bad setting, option or address; also click's usage errors

ENV_ARGS = "PREFORK_CMD_ARGS"
# Read instead when PREFORK_CMD_ARGS is not set, for users coming from Gunicorn.
GUNICORN_ENV_ARGS = "GUNICORN_CMD_ARGS"


# --- the command and its help


def plain(text: str) -> str:
    """Help text without the settings table's RST markup."""
    return text.replace("``", "")


def default_help(setting: Setting) -> str:
    """``[default: …]`` for --help; switches, off unless given, have none."""
    if setting.is_flag:
        return ""
    if setting.default_doc:
        text = plain(setting.default_doc)
        if setting.env:  # the default_doc explains $VAR in parentheses
            text = f"{text.split(' (')[0]}; env: {setting.env}"
    elif setting.default is None or callable(setting.default):
        return ""
    elif isinstance(setting.default, float) and setting.default.is_integer():
        text = str(int(setting.default))
    else:
        text = str(setting.default)
    return f"[default: {text}]"


def short_help(setting: Setting) -> str:
    sentence = setting.short or plain(setting.help).split(". ")[0].rstrip(".") + "."
    return " ".join(part for part in (sentence, default_help(setting)) if part)


def _options() -> list[click.Parameter]:
    params: list[click.Parameter] = []
    for setting in SETTINGS:
        if not setting.flags:
            continue
        params.append(click.Option(
            [*setting.flags, setting.name],
            default=() if setting.multiple else None,
            multiple=setting.multiple,
            is_flag=setting.is_flag,
            metavar=setting.metavar or None,
            help=short_help(setting),
            show_default=False,
        ))
    return params


HELP_SECTION = "Help"
SECTIONS = {s.name: s.section for s in SETTINGS}


OPTION_COLUMN = 28  # a longer option gets its help on the next line


class PreforkCommand(click.Command):
    """Options under a heading per section of the settings table, in one
    column layout for all sections so that the page reads as one table."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:
                groups.setdefault(SECTIONS.get(param.name or "", HELP_SECTION), []).append(record)
        width = max(formatter.width, 60)
        for section, rows in groups.items():
            formatter.write(f"\n{section}:\n")
            for option, text in rows:
                formatter.write(_help_row(option, text, width))


def _help_row(option: str, text: str, width: int) -> str:
    indent = " " * (2 + OPTION_COLUMN + 2)
    lines = textwrap.wrap(text, width - len(indent), break_on_hyphens=False,
                          break_long_words=False) or [""]
    head = f"  {option}"
    if len(option) <= OPTION_COLUMN:
        first = f"{head.ljust(len(indent))}{lines.pop(0)}\n"
    else:
        first = f"{head}\n"
    return first + "".join(f"{indent}{line}\n" for line in lines)


EPILOG = ("Options can also be set in a config file (-c) and in PREFORK_CMD_ARGS. "
          "prefork --help-setting NAME describes a setting in full; docs/settings.md "
          "describes them all. Exit status: 0 stopped normally, 1 failed at run time "
          "(e.g. the application cannot load), 2 a bad setting.")


def make_command() -> click.Command:
    params = _options()
    params.append(click.Argument(["app_module"], required=False, metavar="APP_MODULE"))
    params.append(click.Option(
        ["--help-setting"], metavar="NAME", expose_value=False, is_eager=True,
        callback=_print_setting_help,
        help="Describe a setting in full (its flag or config name), then exit.",
    ))
    params.append(click.Option(
        ["-v", "--version"], is_flag=True, expose_value=False, is_eager=True,
        callback=_print_version, help="Show the version and exit.",
    ))
    return PreforkCommand(
        "prefork",
        params=params,
        help="Serve the WSGI application APP_MODULE (module:callable) with pre-forked workers.",
        epilog=EPILOG,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"prefork {__version__}")
        ctx.exit(0)


def find_setting(name: str) -> Setting:
    """The setting named by a flag (ours or Gunicorn's) or a config name;
    ``ValueError`` with a one-line message if there is none."""
    key = name.strip()
    flag = key if key.startswith("-") else f"--{key}"
    theirs = GUNICORN_FLAGS.get(flag)
    gunicorn_name = theirs.name if theirs is not None else key.replace("-", "_")
    setting = (BY_CONFIG_NAME.get(key) or _OUR_FLAGS.get(flag)
               or BY_CONFIG_NAME.get(gunicorn_name))
    if setting is not None:
        return setting
    if gunicorn_name in GUNICORN_SETTINGS:
        raise ValueError(gunicorn_unsupported_message(gunicorn_name).replace("; ignored", ""))
    known = [*BY_CONFIG_NAME, *_OUR_FLAGS]
    close = difflib.get_close_matches(name.strip(), known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ValueError(f"no setting named {name.strip()!r}{hint}")


def describe_setting(setting: Setting) -> str:
    """What --help-setting prints: where it is set, the paragraph, the default, an example."""
    places = [f"{flag} {setting.metavar}".rstrip() if not setting.is_flag else flag
              for flag in setting.flags]
    if setting.from_file:
        places.append(f"{setting.name} = ... in a config file")
    lines = [", ".join(places), ""]
    lines += textwrap.wrap(plain(setting.help), 79, break_on_hyphens=False, break_long_words=False)
    lines.append("")
    default = default_help(setting).removeprefix("[default: ").removesuffix("]")
    lines.append(f"Default: {default or ('off' if setting.is_flag else 'none')}")
    if setting.example:
        example = setting.example if not setting.flags else f"prefork {setting.example} myapp:app"
        lines.append(f"Example: {example}")
    return "\n".join(lines)


def _print_setting_help(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None or ctx.resilient_parsing:
        return
    try:
        setting = find_setting(value)
    except ValueError as exc:
        raise click.UsageError(f"--help-setting: {exc}", ctx) from None
    click.echo(describe_setting(setting))
    ctx.exit(0)


def explicit_values(command: click.Command, args: Sequence[str]) -> tuple[dict[str, Any], str | None]:
    """The settings given in ``args`` (not defaults) and the APP_MODULE, if any."""
    ctx = command.make_context("prefork", list(args))
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.flags and ctx.get_parameter_source(setting.name) == ParameterSource.COMMANDLINE:
            value = ctx.params[setting.name]
            values[setting.name] = list(value) if setting.multiple else value
    return values, ctx.params.get("app_module")


# --- Gunicorn's command-line options

_OUR_FLAGS = {flag: s for s in SETTINGS for flag in s.flags}
# Options of the command that are not settings and take a value.
_COMMAND_VALUE_OPTIONS = {"--help-setting"}


def _split_option(arg: str) -> tuple[str, str | None]:
    """``--name=value`` and ``-nVALUE`` into the option and its attached value."""
    if arg.startswith("--"):
        name, eq, value = arg.partition("=")
        return name, value if eq else None
    if len(arg) > 2:
        return arg[:2], arg[2:]
    return arg, None


def translate_gunicorn_args(args: Sequence[str], source: str) -> tuple[list[str], list[str]]:
    """Rewrite Gunicorn options that prefork spells differently, and drop (with a
    warning) those of settings prefork does not support, so that a Gunicorn
    command line or ``GUNICORN_CMD_ARGS`` works. Unknown options are left for
    click to report."""
    out: list[str] = []
    warnings: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            out += [arg, *rest]
            break
        if not arg.startswith("-") or arg == "-":
            out.append(arg)
            continue
        option, value = _split_option(arg)
        if option in _COMMAND_VALUE_OPTIONS:
            out += [arg] + ([rest.pop(0)] if value is None and rest else [])
            continue
        ours = _OUR_FLAGS.get(option)
        theirs = GUNICORN_FLAGS.get(option)
        if ours is not None or theirs is None:
            out.append(arg)
            if ours is not None and value is None and not ours.is_flag and rest:
                out.append(rest.pop(0))
            continue
        if value is None and theirs.kind == VALUE and rest:
            value = rest.pop(0)
        target = BY_CONFIG_NAME.get(theirs.name)
        if target is None or not target.flags:
            text = f"{source}: {gunicorn_unsupported_message(theirs.name, option)}"
            warnings.append(IgnoredSetting(text, theirs.name, value))
        elif target.is_flag == (theirs.kind == FLAG):
            out += [target.option_name] + ([] if target.is_flag else [value or ""])
        else:
            warnings.append(f"{source}: Gunicorn option {option} is spelled differently in "
                            f"prefork: use {target.option_name}; ignored")
    return out, warnings


# --- reading the configuration

DEFAULT_CONFIG_FILES = ("prefork.conf.py", "gunicorn.conf.py")


@dataclass
class Invocation:
    """What the command line and the environment ask for, before the config file."""

    env_layer: Layer | None
    cli_layer: Layer
    warnings: list[str]

    @classmethod
    def parse(cls, argv: Sequence[str], env: Mapping[str, str]) -> Invocation:
        command = make_command()
        args, warnings = translate_gunicorn_args(argv, COMMAND_LINE)
        cli_values, app = explicit_values(command, args)
        if app:
            cli_values["wsgi_app"] = app
        env_layer = None
        name = ENV_ARGS if ENV_ARGS in env else GUNICORN_ENV_ARGS
        text = env.get(name, "")
        if text.strip():
            try:
                env_args, env_warnings = translate_gunicorn_args(shlex.split(text), name)
                env_values, env_app = explicit_values(command, env_args)
            except (ValueError, click.UsageError) as exc:
                message = exc.format_message() if isinstance(exc, click.UsageError) else str(exc)
                raise click.UsageError(f"{name}: {message}") from None
            if env_app:
                env_values["wsgi_app"] = env_app
            env_layer = Layer(name, env_values)
            warnings += env_warnings
        return cls(env_layer, Layer(COMMAND_LINE, cli_values), warnings)

    def flag(self, name: str) -> bool:
        layers = [self.cli_layer] + ([self.env_layer] if self.env_layer else [])
        return any(layer.values.get(name) for layer in layers)

    def config_layers(self) -> tuple[list[Layer], list[str]]:
        """The config file's layer (if there is a file) and its warnings."""
        path = self.cli_layer.values.get("config")
        if path is None and self.env_layer is not None:
            path = self.env_layer.values.get("config")
        layers: list[Layer] = []
        found = path is None
        if found:
            path = next((p for p in DEFAULT_CONFIG_FILES if os.path.isfile(p)), None)
            if path is not None:
                layers.append(Layer("default (found in the current directory)", {"config": path}))
        if path is None:
            return layers, []
        file_layer, warnings = load_config_file(path, found=found)
        return [*layers, file_layer], warnings

    def load(self, env: Mapping[str, str], need_app: bool = True) -> Config:
        """Defaults < config file < PREFORK_CMD_ARGS < command line."""
        layers, file_warnings = self.config_layers()
        if self.env_layer is not None:
            layers.append(self.env_layer)
        layers.append(self.cli_layer)
        cfg = build_config(layers, env)
        check_worker_settings(cfg)
        check_tls_settings(cfg)
        check_reload_settings(cfg)
        warnings = file_warnings + self.warnings
        cfg.warnings = cfg.warnings + [w for w in warnings if not harmless(w, cfg)]
        cfg.notes = [w for w in warnings if harmless(w, cfg)]
        if need_app and not cfg.app_uri:
            raise click.UsageError(
                "missing APP_MODULE (for example: prefork myproject.wsgi:application)")
        return cfg


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> Config:
    """The effective configuration for a command line and an environment."""
    return Invocation.parse(argv, env).load(env)


# --- the command


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"prefork: error: {message}", err=True)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ
    try:
        invocation = Invocation.parse(args, env)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message(), EXIT_BAD_SETTING)
    printing = invocation.flag("print_config")
    checking = invocation.flag("check_config")
    try:
        cfg = invocation.load(env, need_app=not printing)
        if not printing or checking:
            check_addresses(cfg, env)
    except (ConfigError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        fail(message, EXIT_BAD_SETTING)
    if printing or checking:
        print_warnings(cfg)
    if printing:
        click.echo(format_config(cfg))
        if not checking:
            sys.exit(EXIT_OK)
    if checking:
        sys.exit(check_config(cfg))
    sys.exit(serve(cfg, lambda: invocation.load(env, need_app=True)))


def print_warnings(cfg: Config) -> None:
    for warning in cfg.warnings:
        click.echo(f"prefork: warning: {warning}", err=True)


def check_addresses(cfg: Config, env: Mapping[str, str]) -> None:
    """A bind address whose host cannot be resolved is a bad setting (exit 2),
    found before anything starts. Inherited sockets make --bind moot."""
    from .binding import FDS_ENV
    from .sockets import BindError, check_resolvable

    if env.get("LISTEN_FDS") or env.get(FDS_ENV):
        return
    try:
        check_resolvable(cfg.addresses)
    except BindError as exc:
        raise ConfigError(f"{cfg.where('bind')}: {exc}") from None


def format_config(cfg: Config) -> str:
    """Every setting as ``name = value`` (a Python literal where it can be) and its source."""
    rows = [(f"{s.name} = {_show(cfg.get(s.name))}", cfg.sources[s.name]) for s in SETTINGS]
    width = min(40, max(len(text) for text, _ in rows))
    return "\n".join(f"{text.ljust(width)}  # {source}" for text, source in rows)


def _show(value: Any) -> str:
    if callable(value):
        return f"<function {getattr(value, '__qualname__', type(value).__name__)}>"
    return repr(value)


def check_config(cfg: Config) -> int:
    """Check that workers' heartbeat files can be made, and import the application
    as a worker would; 0 if all is well, 1 otherwise."""
    from .app import describe_failure, load_app, prepare_path
    from .arbiter import StartupError, check_worker_tmp_dir

    try:
        check_worker_tmp_dir(cfg.worker_tmp_dir)
    except StartupError as exc:
        click.echo(f"prefork: error: {exc}", err=True)
        return 1
    try:
        prepare_path(cfg.chdir, cfg.pythonpath)
        load_app(cfg.app_uri)
    except (Exception, SystemExit) as exc:
        click.echo(f"prefork: error: {describe_failure(cfg.app_uri, exc)}", err=True)
        return EXIT_FAILURE
    click.echo(f"prefork: configuration OK; application {cfg.app_uri!r} loaded")
    return EXIT_OK


def _log_leaves_the_terminal(cfg: Config) -> bool:
    """Whether the error log may not reach the standard error prefork started with."""
    return (cfg.errorlog != "-" or cfg.daemon
            or any(cfg.get(n) is not None for n in ("logconfig", "logconfig_dict", "logconfig_json")))


def serve(cfg: Config, reload_config: Callable[[], Config] | None = None) -> int:
    from .arbiter import Arbiter
    from .logs import Logger

    # Before the logs are set up: --capture-output moves fd 2 into the log file.
    if _log_leaves_the_terminal(cfg):
        print_warnings(cfg)
    try:
        log = Logger.from_config(cfg)
    except OSError as exc:
        fail(f"cannot open log file: {exc.filename}: {exc.strerror}", EXIT_FAILURE)
    except ConfigError as exc:
        fail(str(exc), EXIT_BAD_SETTING)
    for note in cfg.notes:
        log.debug("%s", note)
    for warning in cfg.warnings:
        log.warning("%s", warning)
    return Arbiter(cfg, log, reload_config=reload_config).run()
