# The ``prefork`` command. Its options are generated from the settings table;
# values are validated by the table's validators (not by click types) so the
# command line, the environment variable and config files give the same
# one-line messages. Errors in settings exit with status 2, errors while
# starting (a port in use, an application that cannot load) with status 1.
from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click
from click.core import ParameterSource

from . import __version__
from .settings import SETTINGS, Config, ConfigError, Layer, build_config, load_config_file
from .tls import check_settings as check_tls_settings

ENV_ARGS = "PREFORK_CMD_ARGS"


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


DEFAULT_CONFIG_FILE = "prefork.conf.py"


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> Config:
    """Defaults < config file < PREFORK_CMD_ARGS < command line."""
    command = make_command()
    cli_values, app_uri = explicit_values(command, argv)
    env_layer = None
    env_args = env.get(ENV_ARGS, "")
    if env_args:
        env_values, env_app = explicit_values(command, shlex.split(env_args))
        env_layer = Layer(ENV_ARGS, env_values)
        app_uri = app_uri or env_app
    layers: list[Layer] = []
    warnings: list[str] = []
    path = cli_values.get("config") or (env_layer.values.get("config") if env_layer else None)
    if path is None and os.path.isfile(DEFAULT_CONFIG_FILE):
        path = DEFAULT_CONFIG_FILE
    if path:
        file_layer, warnings = load_config_file(path)
        layers.append(file_layer)
    if env_layer is not None:
        layers.append(env_layer)
    layers.append(Layer("command line", cli_values))
    if not app_uri:
        raise click.UsageError("missing APP_MODULE (for example: prefork myproject.wsgi:application)")
    cfg = build_config(layers, env, app_uri)
    check_tls_settings(cfg)
    cfg.warnings = warnings
    return cfg


def fail(message: str, code: int) -> None:
    click.echo(f"prefork: error: {message}", err=True)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args, os.environ)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        fail(exc.format_message(), 2)
    except ConfigError as exc:
        fail(str(exc), 2)
    except click.ClickException as exc:
        fail(exc.format_message(), 2)
    sys.exit(serve(cfg, lambda: load_config(args, os.environ)))


def serve(cfg: Config, reload_config: Callable[[], Config] | None = None) -> int:
    from .arbiter import Arbiter
    from .logs import Logger

    try:
        log = Logger(cfg.errorlog, cfg.loglevel, cfg.accesslog)
    except OSError as exc:
        fail(f"cannot open log file: {exc.filename}: {exc.strerror}", 1)
    for warning in cfg.warnings:
        log.warning("%s", warning)
    return Arbiter(cfg, log, reload_config=reload_config).run()
