"""Click options derived from the settings classes, so flags, environment
variables and defaults are declared once (in pipelines.settings)."""

from __future__ import annotations

import functools
import logging
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import click
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from sinks.redact import query_names

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=BaseSettings)

log = logging.getLogger(__name__)

ENV_PREFIX = "TYKPULSE_"
DSN_FORMS = "chdb:///abs/path (embedded, default ./data/clickhouse) or http(s)://user:pass@host:port"


def clickhouse_help(role: str) -> dict[str, str]:
    """--clickhouse worded for a command that reads (`role`: what it reads there), not where rollups go."""
    return {
        "clickhouse_dsn": f"The ClickHouse {role}: {DSN_FORMS}.",
        "clickhouse_database": "Database holding the rollups it reads.",
    }


def _base_type(annotation: Any) -> Any:
    """Strip Optional/Annotated wrappers: `str | None` -> str, `Annotated[list[str], ...]` -> list[str]."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _base_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    return annotation


def _show_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.get_default(call_default_factory=True)
    else:
        value = field.default
    if isinstance(value, SecretStr):
        return "(not set)" if not value.get_secret_value() else "(set)"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "(none)"
    return "(not set)" if value is None else str(value)


# Settings holding a URL that may carry a password (checked by sinks.redact.checked_url).
_URL_FIELDS: Final = frozenset({"clickhouse_dsn", "redis", "webhook"})


def url_has_password(url: str) -> bool:
    """Whether a URL carries a password: as user:password@, or as a query parameter."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.password is not None or "password" in query_names(parts)


def secret_url_seen(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback for an option taking a URL: warn when it came as an argument with a password."""
    if value in (None, "") or param.name is None or not url_has_password(str(value)):
        return value
    return _secret_seen(ctx, param, value, url=True)


def _secret_seen(ctx: click.Context, param: click.Parameter, value: Any, *, url: bool = False) -> Any:
    """Warn when a secret came as an argument: every local user reads arguments (`ps`)."""
    if value in (None, "") or param.name is None:
        return value
    if ctx.get_parameter_source(param.name) is not click.core.ParameterSource.COMMANDLINE:
        return value
    if (url or param.name in _URL_FIELDS) and not url_has_password(str(value)):
        return value
    log.warning(
        "%s was given on the command line, where every local user can read it (ps, /proc/PID/cmdline)%s",
        param.opts[-1] if param.opts else param.name,
        f": set {param.envvar} instead" if isinstance(param.envvar, str) else "",
    )
    return value


def _option(
    name: str, field: FieldInfo, flag: str | tuple[str, ...], help_text: str | None = None
) -> Callable[[F], F]:
    base = _base_type(field.annotation)
    kwargs: dict[str, Any] = {
        "envvar": ENV_PREFIX + name.upper(),
        "show_envvar": True,
        "default": None,
        "help": f"{help_text or field.description or ''} [default: {_show_default(field)}]",
    }
    if typing.get_origin(base) is list:
        kwargs["multiple"] = True
        kwargs["type"] = typing.get_args(base)[0]
    elif base is bool and isinstance(flag, str):
        flag = f"{flag}/--no-{flag[2:]}"
    elif base is SecretStr:
        kwargs["type"] = str
        kwargs["callback"] = _secret_seen
    elif typing.get_origin(base) is typing.Literal:
        kwargs["type"] = click.Choice([str(choice) for choice in typing.get_args(base)])
    elif base in (int, float, str):
        kwargs["type"] = base
        if name in _URL_FIELDS:
            kwargs["callback"] = _secret_seen
    flags = (flag,) if isinstance(flag, str) else flag
    return click.option(*flags, name, **kwargs)


class _OldSpelling(click.Option):
    @property
    def human_readable_name(self) -> str:
        return self.opts[0]  # what the user typed, in the deprecation notice


def deprecated_alias(old: str, name: str, new: str, **kwargs: Any) -> Callable[[F], F]:
    """`old` keeps working for scripts, hidden from --help, with a deprecation notice; it fills `name`.

    A parameter of its own that hands its value to `name`: click warns about a deprecated option
    whenever its parameter came from the command line, so sharing `name` warned about the old
    spelling when the new one was used. The spelling given first on the command line wins (click
    processes those first); an old spelling given there beats the new one's variable.
    No environment variable: the old spelling's variable is what collided (or never existed).
    """

    def hand_over(ctx: click.Context, _: click.Parameter, value: Any) -> Any:
        given_new = ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        if value not in (None, ()) and not given_new:
            ctx.params[name] = value
        return value

    return click.option(
        old,
        name + "__old_spelling",
        cls=_OldSpelling,
        hidden=True,
        deprecated=f"use {new}",
        default=None,
        expose_value=False,
        callback=hand_over,
        **kwargs,
    )


def settings_options(
    model: type[BaseSettings],
    *,
    flags: Mapping[str, str | tuple[str, ...]] | None = None,
    exclude: tuple[str, ...] = (),
    help: Mapping[str, str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> Callable[[F], F]:
    """Add one option per field of `model`; `flags` renames some (`clickhouse_dsn` -> `--clickhouse`),
    a tuple gives an option several names (`("--publish", "--connect")`); `help` words a field for
    this command; `aliases` keeps an old flag of a field working, hidden and deprecated."""
    flags, help_texts, aliases = flags or {}, help or {}, aliases or {}

    def decorate(fn: F) -> F:
        for name, field in reversed(list(model.model_fields.items())):
            if name in exclude:
                continue
            flag = flags.get(name, "--" + name.replace("_", "-"))
            if name in aliases:
                new = flag if isinstance(flag, str) else flag[0]
                fn = deprecated_alias(aliases[name], name, new, **_alias_kwargs(field))(fn)
            fn = _option(name, field, flag, help_texts.get(name))(fn)
        return fn

    return decorate


def _alias_kwargs(field: FieldInfo) -> dict[str, Any]:
    base = _base_type(field.annotation)
    if typing.get_origin(base) is list:
        return {"multiple": True, "type": typing.get_args(base)[0]}
    if base in (int, float):
        return {"type": base}
    return {"type": str}


def build_settings(model: type[S], values: Mapping[str, Any]) -> S:
    """Instantiate `model` from the CLI values that were given (the rest from env and defaults)."""
    given = {k: v for k, v in values.items() if k in model.model_fields and v not in (None, ())}
    for key, value in given.items():
        if isinstance(value, tuple):
            given[key] = list(value)
    try:
        return model(**given)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def pass_settings(*models: type[BaseSettings]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Call the command with one built settings object per model, positionally."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(**values: Any) -> Any:
            settings = [build_settings(m, values) for m in models]
            rest = {k: v for k, v in values.items() if not any(k in m.model_fields for m in models)}
            return fn(*settings, **rest)

        return wrapper

    return decorate
