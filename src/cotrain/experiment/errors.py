"""Errors of experiment files, each one line that names the offending key.

A user who wrote ``lr = -1`` under ``[fedavg]`` reads ``fedavg.lr: must be > 0 (got -1)``, not a
traceback. :class:`ConfigError` carries that line; :func:`format_validation_error` turns pydantic's
error list into it.
"""

from __future__ import annotations

from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from cotrain.errors import ConfigError



def dotted(loc: Iterable[Any]) -> str:
    """``("fedavg", "lr")`` -> ``"fedavg.lr"``; list indices become ``[i]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _allowed_keys(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed beside the last element of ``loc``, walking the model's fields."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = field.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "list_type": "must be an array",
}


def format_error(err: dict[str, Any], model: type[BaseModel] | None = None) -> str:
    """One pydantic error dict as ``key: what is allowed (got value)``."""
    loc = tuple(err.get("loc", ()))
    key = dotted(loc) or "config"
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        what = "unknown section" if len(loc) == 1 else "unknown key"
        if allowed:
            where = "sections" if len(loc) == 1 else f"keys in [{dotted(loc[:-1])}]"
            return f"{key}: {what}; allowed {where}: {', '.join(allowed)}"
        return f"{key}: {what}"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "value_error":  # our own validators: their message is already the explanation
        inner = ctx.get("error")
        if isinstance(inner, ConfigError) and inner.key:  # a check across sections names its own key
            return str(inner)
        return f"{key}: {inner if inner is not None else err.get('msg', '')}"
    template = _MESSAGES.get(kind)
    text = template.format(**ctx) if template else str(err.get("msg", "invalid value"))
    if kind == "literal_error" and "expected" in ctx:
        text = f"must be one of {ctx['expected']}"
    if "input" in err and kind not in ("missing",):
        text += f" (got {_short(err['input'])})"
    return f"{key}: {text}"


def format_validation_error(exc: ValidationError, model: type[BaseModel] | None = None) -> ConfigError:
    """The first error of ``exc`` as a one-line :class:`ConfigError`; others are counted by key."""
    errors = exc.errors(include_url=False)
    if not errors:
        return ConfigError(str(exc))
    first = format_error(errors[0], model)
    rest = [dotted(e.get("loc", ())) for e in errors[1:]]
    if rest:
        first += f" (and {len(rest)} more: {', '.join(rest[:5])}{', ...' if len(rest) > 5 else ''})"
    inner = (errors[0].get("ctx") or {}).get("error")
    key = inner.key if isinstance(inner, ConfigError) and inner.key else dotted(errors[0].get("loc", ()))
    return ConfigError(first, key=key)
