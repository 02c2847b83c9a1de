"""Typed files: YAML/JSON read into pydantic models, with one-paragraph errors naming the file and key.

Profiles (module/profile.py), environment files (settings.py) and domain seed configs are all read
through :func:`load_mapping` and :func:`validate`, so a wrong type reads the same everywhere::

    wrong type for key 'capabilities' in refmod/profile.yml: got the string 'vectors'; allowed: a list
    of strings (e.g. [files, vectors])
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

from pytest_vexfs.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _single_value(value: Any) -> Any:
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError("must be a single value (a string, a number or true/false)")
    return value


#: A single YAML value: string, number or boolean (never a list or mapping), kept as its own type.
Scalar = Annotated[Any, AfterValidator(_single_value)]


def load_mapping(path: Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML (or .json) file; malformed text or a non-mapping is a ConfigError."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}", source=str(path)) from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"malformed YAML{where}: {getattr(exc, 'problem', None) or exc}", source=str(path),
                          hint=f"fix the YAML syntax of the {what}") from None
    except ValueError as exc:
        raise ConfigError(f"malformed JSON: {exc}", source=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"a {what} must be a mapping of keys to values, not {_describe(data)}",
                          source=str(path))
    return data


def validate(model: type[M], data: dict[str, Any], source: str, what: str,
             context: dict[str, Any] | None = None) -> M:
    """`data` as a `model`; the first problem becomes a ConfigError naming file, key, value and what fits."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise error_from(exc, model, source, what) from None


def error_from(exc: ValidationError, model: type[BaseModel], source: str, what: str) -> ConfigError:
    """One paragraph for the first error of `exc` (the others usually follow from the same slip)."""
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"] if not isinstance(part, int)]
    key = ".".join(loc)
    field_model, field_name = _owner(model, loc)
    if err["type"] == "extra_forbidden":
        known = sorted(field_model.model_fields) if field_model is not None else []
        prefix = ".".join(loc[:-1]) + "." if len(loc) > 1 else ""
        return ConfigError(f"unknown key {key} in the {what}", source=source, key=key,
                           allowed=", ".join(prefix + k for k in known))
    if err["type"] == "missing":
        return ConfigError(f"the {what} needs the key {key!r}", source=source, key=key,
                           allowed=_allowed(field_model, field_name))
    value = err.get("input")
    if err["type"].startswith(("value_error", "assertion_error")):
        detail = str(err.get("ctx", {}).get("error", err["msg"]))
        return ConfigError(f"bad value {_short(value)} for key {key!r} in the {what}: {detail}", source=source,
                           key=key, allowed=_allowed(field_model, field_name))
    return ConfigError(f"wrong type for key {key!r} in the {what}: got {_describe(value)}",
                       source=source, key=key, allowed=_allowed(field_model, field_name))


def _owner(model: type[BaseModel], loc: list[str]) -> tuple[type[BaseModel] | None, str]:
    """The model that declares the last key of `loc`, and that key (nested models followed)."""
    current: type[BaseModel] | None = model
    for depth, part in enumerate(loc):
        if current is None or part not in current.model_fields:
            return current, part
        if depth == len(loc) - 1:
            return current, part
        nested = _nested_model(current.model_fields[part].annotation)
        if nested is None:
            return current, part
        current = nested
    return current, loc[-1] if loc else ""


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _allowed(model: type[BaseModel] | None, name: str) -> str:
    if model is None or name not in model.model_fields:
        return ""
    field = model.model_fields[name]
    text = _type_words(field.annotation)
    if field.description:
        text += f" ({field.description})"
    return text


def _type_words(annotation: Any) -> str:
    """`list[str]` -> "a list of strings": how a user would say what fits."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_words(args[0])
    if annotation is typing.Any:
        return "a value"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type_words(a) for a in args if a is not type(None)))
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (list, set, frozenset, tuple):
        inner = _type_words(args[0]) if args else "values"
        return f"a list of {_plural(inner)}"
    if origin is dict:
        return f"a mapping of names to {_plural(_type_words(args[1]))}" if len(args) == 2 else "a mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping with keys " + ", ".join(annotation.model_fields)
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            Path: "a path", type(None): "nothing"}.get(annotation, "a value")


def _plural(words: str) -> str:
    for single, many in (("a mapping", "mappings"), ("a string", "strings"), ("an integer", "integers"),
                         ("a number", "numbers"), ("true or false", "booleans"), ("a path", "paths"),
                         ("a value", "values")):
        words = words.replace(single, many)
    return words.removeprefix("a ").removeprefix("an ")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, list):
        return f"the list {_short(value)}"
    if isinstance(value, dict):
        return f"the mapping {_short(value)}"
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {_short(value)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
