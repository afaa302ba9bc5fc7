"""Structural validation of decoded TOML against msgspec Structs, reporting every error at once.

msgspec stops at the first error; an operator fixing a configuration wants them all, each with
the dotted path of the field it concerns (``cells[2].capacity: must be > 0``).
"""

from __future__ import annotations

import types
import typing
from typing import Any

import msgspec

__all__ = ["field_value", "validate"]

_NUMERIC_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    """The TOML name of a decoded value's type."""
    return {dict: "table", list: "array"}.get(type(value), type(value).__name__)


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _check_meta(value: Any, meta: msgspec.Meta, path: str, errors: list[str]) -> bool:
    for attr, symbol in _NUMERIC_BOUNDS:
        bound = getattr(meta, attr)
        if bound is None:
            continue
        ok = {
            "gt": value > bound,
            "ge": value >= bound,
            "lt": value < bound,
            "le": value <= bound,
        }[attr]
        if not ok:
            errors.append(f"{path}: must be {symbol} {bound}, got {value!r}")
            return False
    if meta.min_length is not None and len(value) < meta.min_length:
        what = "character" if isinstance(value, str) else "item"
        errors.append(f"{path}: must have at least {meta.min_length} {what}(s)")
        return False
    return True


def _leaf(value: Any, annotation: Any, path: str, errors: list[str]) -> Any:
    try:
        return msgspec.convert(value, annotation, strict=True)
    except msgspec.ValidationError as err:
        message = str(err).split(" - at ", 1)[0]
        if typing.get_origin(annotation) is typing.Literal:
            message = f"must be {_describe(annotation)}, got {value!r}"
        else:
            # msgspec speaks JSON; a TOML table is an ``object`` there.
            message = message[0].lower() + message[1:].replace("`object`", "`table`")
        errors.append(f"{path}: {message.replace('`', '')}")
        return None


def _struct(value: Any, cls: type[msgspec.Struct], path: str, errors: list[str]) -> Any:
    if not isinstance(value, dict):
        errors.append(f"{path or 'configuration'}: expected a table, got {_kind(value)}")
        return None
    internal = getattr(cls, "_internal_fields", ())
    fields = [f for f in msgspec.structs.fields(cls) if f.name not in internal]
    known = {f.encode_name for f in fields}
    for key in value:
        if key not in known:
            errors.append(f"{_join(path, key)}: unknown field (known: {', '.join(sorted(known))})")
    before = len(errors)
    kwargs = {}
    for field in fields:
        where = _join(path, field.encode_name)
        if field.encode_name in value:
            kwargs[field.name] = _check(value[field.encode_name], field.type, where, errors)
        elif field.default is msgspec.NODEFAULT and field.default_factory is msgspec.NODEFAULT:
            errors.append(f"{where}: required")
    if len(errors) > before:
        return None
    return cls(**kwargs)


def _check(value: Any, annotation: Any, path: str, errors: list[str]) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        # Check the annotated type itself (item by item for arrays and tables), then its bounds.
        base, *metas = typing.get_args(annotation)
        before = len(errors)
        converted = _check(value, base, path, errors)
        if len(errors) > before:
            return None
        for meta in metas:
            if isinstance(meta, msgspec.Meta) and not _check_meta(converted, meta, path, errors):
                return None
        return converted
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or len(members) != 1:
            return _leaf(value, annotation, path, errors)
        return _check(value, members[0], path, errors)
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return _struct(value, annotation, path, errors)
    if origin is list and not isinstance(value, list):
        errors.append(f"{path}: expected an array, got {_kind(value)}")
        return None
    if origin is list:
        (item,) = typing.get_args(annotation)
        return [_check(v, item, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict and not isinstance(value, dict):
        errors.append(f"{path}: expected a table, got {_kind(value)}")
        return None
    if origin is dict:
        _, item = typing.get_args(annotation)
        return {k: _check(v, item, _join(path, k), errors) for k, v in value.items()}
    return _leaf(value, annotation, path, errors)


T = typing.TypeVar("T", bound=msgspec.Struct)


def validate(value: Any, cls: type[T], errors: list[str], path: str = "") -> T | None:
    """Converts ``value`` (found at ``path``) to ``cls``, appending every problem to ``errors``.

    Fields named in the class attribute ``_internal_fields`` are not read from ``value``: they
    are unknown fields there, and keep their defaults.
    """
    return _struct(value, cls, path, errors)


def field_value(value: Any, cls: type[msgspec.Struct], name: str) -> Any:
    """The field ``name`` of ``cls`` read from the table ``value`` when it is valid on its own
    (its default when absent), else None: what cross-reference checks can still use of a table
    whose other fields are wrong (their errors come from :func:`validate`)."""
    if not isinstance(value, dict):
        return None
    field = next(f for f in msgspec.structs.fields(cls) if f.name == name)
    if field.encode_name not in value:
        if field.default is not msgspec.NODEFAULT:
            return field.default
        if field.default_factory is not msgspec.NODEFAULT:
            return field.default_factory()
        return None
    errors: list[str] = []
    converted = _check(value[field.encode_name], field.type, name, errors)
    return None if errors else converted
