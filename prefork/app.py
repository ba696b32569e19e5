# Loading the application from an APP_MODULE string. The string is parsed
# with ``ast`` (never ``eval``): ``module``, ``module:name``,
# ``module:obj.attr`` or a factory call with literal arguments,
# ``module:create_app('prod', debug=False)``. A typo (missing module or
# attribute, or an object that is not callable) and an ASGI application are an
# ``AppNotFound`` with a one-line message, found before any request is served;
# an exception raised by the application's own code while it is imported
# propagates with its traceback, and one raised by a factory is wrapped in
# ``FactoryFailed``, so that the message says which of the two happened
# (``describe_failure``).
from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
import sysconfig
import traceback
from collections.abc import Callable
from typing import Any


class AppNotFound(Exception):
    """APP_MODULE does not name a WSGI callable; the message says what is wrong."""


class FactoryFailed(Exception):
    """The factory APP_MODULE calls raised; ``__cause__`` is its exception."""


class AppSpec:
    """A parsed APP_MODULE: the module, an attribute path and optional call."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        module, sep, expr = uri.partition(":")
        module = module.strip()
        if not module or not all(part.isidentifier() for part in module.split(".")):
            raise AppNotFound(f"invalid APP_MODULE {uri!r}: expected module:name")
        self.module = module
        self.attrs: list[str] = []
        self.call: tuple[list[Any], dict[str, Any]] | None = None
        if sep:
            self._parse_expr(expr.strip())

    def _parse_expr(self, expr: str) -> None:
        try:
            node = ast.parse(expr, mode="eval").body
        except SyntaxError:
            raise AppNotFound(f"invalid APP_MODULE {self.uri!r}: cannot parse {expr!r}") from None
        if isinstance(node, ast.Call):
            try:
                args = [ast.literal_eval(a) for a in node.args]
                kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
            except ValueError:
                raise AppNotFound(
                    f"invalid APP_MODULE {self.uri!r}: factory arguments must be literals"
                ) from None
            if any(k.arg is None for k in node.keywords):
                raise AppNotFound(f"invalid APP_MODULE {self.uri!r}: ** arguments not allowed")
            self.call = (args, kwargs)
            node = node.func
        attrs: list[str] = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            raise AppNotFound(f"invalid APP_MODULE {self.uri!r}: {expr!r} is not a name")
        attrs.append(node.id)
        self.attrs = attrs[::-1]


def prepare_path(chdir: str | None, pythonpath: str | None) -> None:
    """Make the application importable: cwd first on sys.path, like ``python -m``."""
    if chdir:
        os.chdir(chdir)
    if pythonpath:
        for entry in reversed([p.strip() for p in pythonpath.split(",") if p.strip()]):
            sys.path.insert(0, os.path.abspath(entry))
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only a missing module *named by the user* is a typo; a missing
        # dependency inside the application is the application's error.
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise AppNotFound(f"no module named {name!r} (looked in {os.getcwd()})"
                              f"{_chdir_hint(name)}") from None
        raise


def _chdir_hint(name: str) -> str:
    """A directory below this one from which ``name`` would import (a Django
    project run from the folder above it: mysite/mysite/wsgi.py), as a hint."""
    parts = name.split(".")
    try:
        dirs = sorted(e.name for e in os.scandir() if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return ""
    # The directory named like the package first: that is the usual layout.
    for folder in sorted(dirs[:500], key=lambda d: d != parts[0]):
        base = os.path.join(folder, *parts)
        for candidate in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(candidate):
                return f"; {candidate} exists: run from {folder} or add --chdir {folder}"
    return ""


def load_app(uri: str) -> Callable[..., Any]:
    """Import and return the WSGI callable named by ``uri``."""
    spec = AppSpec(uri)
    module = import_module(spec.module)
    if spec.attrs:
        obj: Any = module
        path = spec.module
        for attr in spec.attrs:
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                raise AppNotFound(f"{path!r} has no attribute {attr!r}") from None
            path = f"{path}.{attr}"
    else:
        for candidate in ("application", "app"):
            if hasattr(module, candidate):
                obj = getattr(module, candidate)
                path = f"{spec.module}.{candidate}"
                break
        else:
            raise AppNotFound(
                f"module {spec.module!r} has neither 'application' nor 'app'; "
                f"name the callable: {spec.module}:NAME"
            )
    if spec.call is not None:
        if not callable(obj):
            raise AppNotFound(f"{path!r} is not callable, so it cannot be a factory")
        args, kwargs = spec.call
        try:
            obj = obj(*args, **kwargs)
        except Exception as exc:
            raise FactoryFailed(f"the factory {path!r} raised an exception when called") from exc
        path = f"{path}(...)"
    if not callable(obj):
        raise AppNotFound(f"{path!r} is not callable (it is a {type(obj).__name__})")
    kind = asgi_kind(obj)
    if kind:
        raise AppNotFound(f"{path!r} is an ASGI application ({kind}) and prefork serves "
                          "WSGI: name a WSGI callable (for Django, PROJECT.wsgi:application)")
    app: Callable[..., Any] = obj
    return app


def _async_call(cls: type) -> bool:
    """Whether instances of ``cls`` have an ``async def __call__``."""
    for klass in cls.__mro__:
        if "__call__" in vars(klass):
            return inspect.iscoroutinefunction(vars(klass)["__call__"])
    return False


def asgi_kind(obj: Any) -> str:
    """How ``obj`` looks like an ASGI application, or "" if it does not."""
    if inspect.iscoroutinefunction(obj):
        return "an async function"
    if inspect.isclass(obj):
        return "a class with an async __call__" if _async_call(obj) else ""
    return "an object with an async __call__" if _async_call(type(obj)) else ""


def describe_failure(uri: str, exc: BaseException) -> str:
    """Why the application cannot be loaded: one line for ``AppNotFound``, else
    what raised (the import or the factory) and the traceback."""
    if isinstance(exc, AppNotFound):
        return f"cannot load the application: {exc}"
    if isinstance(exc, FactoryFailed) and exc.__cause__ is not None:
        what, exc = str(exc), exc.__cause__
    else:
        what = "an exception was raised while importing it"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    where = failure_location(exc)
    summary = f"{where}: " if where else ""
    summary += "".join(traceback.format_exception_only(type(exc), exc)).splitlines()[-1]
    return f"cannot load the application {uri!r}: {what}: {summary}\n{text.rstrip()}"


def failure_location(exc: BaseException) -> str:
    """``FILE:LINE`` of the application's code that failed: where a syntax error
    is, else the innermost frame outside Python's own library and prefork."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return f"{exc.filename}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if _is_application_file(frame.filename):
            return f"{frame.filename}:{frame.lineno}"
    return ""


def _dirs(*keys: str) -> tuple[str, ...]:
    return tuple({os.path.join(sysconfig.get_paths()[key], "") for key in keys})


# Python's own library and prefork, but not the installed packages, which
# may lie inside the former (a Python without a virtualenv).
_LIBRARY_DIRS = (*_dirs("stdlib", "platstdlib"),
                 os.path.join(os.path.dirname(os.path.abspath(__file__)), ""))
_PACKAGE_DIRS = _dirs("purelib", "platlib")


def _is_application_file(path: str) -> bool:
    if path.startswith("<"):
        return False
    path = os.path.abspath(path)
    if path.startswith(_LIBRARY_DIRS[-1]):
        return False
    return path.startswith(_PACKAGE_DIRS) or not path.startswith(_LIBRARY_DIRS)


def application_files(before: set[str], exc: BaseException | None = None) -> list[str]:
    """The source files of the modules imported since ``before`` (names in
    ``sys.modules``), outside Python's own library: what ``--reload`` watches.
    After a failed import, the files of the failure (a module with a syntax
    error is in no ``sys.modules``) are added, so fixing them is noticed too."""
    files = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) if name not in before else None
        if isinstance(path, str) and path.endswith(".py"):
            files.add(os.path.abspath(path))
    if exc is not None:
        if isinstance(exc, SyntaxError) and exc.filename:
            files.add(os.path.abspath(exc.filename))
        files.update(os.path.abspath(f.filename)
                     for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<"))
    return sorted(f for f in files if _is_application_file(f))
