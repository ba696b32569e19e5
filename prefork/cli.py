# The ``prefork`` command. Its options are generated from the settings table;
# values are validated by the table's validators (not by click types) so the
# command line, the environment variable and config files give the same
# one-line messages. Errors in settings exit with status 2, errors while
# starting (a port in use, an application that cannot load) with status 1.
from __future__ import annotations

import os
import shlex
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from . import __version__
from .compat import FLAG, GUNICORN_FLAGS, VALUE
from .settings import (
    BY_CONFIG_NAME,
    COMMAND_LINE,
    SETTINGS,
    Config,
    ConfigError,
    Layer,
    build_config,
    gunicorn_unsupported_message,
    load_config_file,
)
from .tls import check_settings as check_tls_settings

ENV_ARGS = "PREFORK_CMD_ARGS"
# Read instead when PREFORK_CMD_ARGS is not set, for users coming from Gunicorn.
GUNICORN_ENV_ARGS = "GUNICORN_CMD_ARGS"


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
            help=setting.help,
            show_default=False,
        ))
    return params


def make_command() -> click.Command:
    params = _options()
    params.append(click.Argument(["app_module"], required=False, metavar="APP_MODULE"))
    params.append(click.Option(
        ["--version"], is_flag=True, expose_value=False, is_eager=True,
        callback=_print_version, help="Show the version and exit.",
    ))
    return click.Command(
        "prefork",
        params=params,
        help="Serve the WSGI application APP_MODULE (module:callable) with pre-forked workers.",
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"prefork {__version__}")
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
            warnings.append(f"{source}: {gunicorn_unsupported_message(theirs.name, option)}")
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
        check_tls_settings(cfg)
        cfg.warnings = file_warnings + self.warnings
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
        fail(exc.format_message(), 2)
    printing = invocation.flag("print_config")
    checking = invocation.flag("check_config")
    try:
        cfg = invocation.load(env, need_app=not printing)
    except (ConfigError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        fail(message, 1 if checking else 2)
    if printing or checking:
        for warning in cfg.warnings:
            click.echo(f"prefork: warning: {warning}", err=True)
    if printing:
        click.echo(format_config(cfg))
        if not checking:
            sys.exit(0)
    if checking:
        sys.exit(check_config(cfg))
    sys.exit(serve(cfg, lambda: invocation.load(env, need_app=True)))


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
    from .app import AppNotFound, load_app, prepare_path
    from .arbiter import StartupError, check_worker_tmp_dir

    try:
        check_worker_tmp_dir(cfg.worker_tmp_dir)
    except StartupError as exc:
        click.echo(f"prefork: error: {exc}", err=True)
        return 1
    try:
        prepare_path(cfg.chdir, cfg.pythonpath)
        load_app(cfg.app_uri)
    except AppNotFound as exc:
        click.echo(f"prefork: error: cannot load the application: {exc}", err=True)
        return 1
    except (Exception, SystemExit) as exc:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        click.echo(f"prefork: error: cannot load the application {cfg.app_uri!r}: an "
                   f"exception was raised while importing it\n{text.rstrip()}", err=True)
        return 1
    click.echo(f"prefork: configuration OK; application {cfg.app_uri!r} loaded")
    return 0


def serve(cfg: Config, reload_config: Callable[[], Config] | None = None) -> int:
    from .arbiter import Arbiter
    from .logs import Logger

    try:
        log = Logger.from_config(cfg)
    except OSError as exc:
        fail(f"cannot open log file: {exc.filename}: {exc.strerror}", 1)
    except ConfigError as exc:
        fail(str(exc), 2)
    for warning in cfg.warnings:
        log.warning("%s", warning)
    return Arbiter(cfg, log, reload_config=reload_config).run()
