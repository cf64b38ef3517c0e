"""The one JSON serializer for bridge's frozen dataclasses.

Every record that crosses a process boundary (bridge.messages) is written with `to_json` and
read back with `from_json`, which follows the dataclass's type annotations: nested records,
enums, paths, tuples, optional fields and ``dict[str, X]``. A value that does not fit its
annotation raises `RecordError` naming the field path (``produced[0].signature.inputs[1].shape``),
so a damaged or hostile file is one clear line, never a KeyError deep in a caller.

Nothing here imports a framework.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")

JSON = Any
"""What `json.loads` returns: dicts, lists, strings, numbers, booleans and None."""


class RecordError(ValueError):
    """A JSON value does not fit the record it is read into. `path` names the field."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or 'the record'}: {problem}")
        self.path = path
        self.problem = problem


def to_json(value: Any) -> JSON:
    """`value` as plain JSON data: dataclasses become dicts of their fields, in field order."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def from_json[T](cls: type[T], data: JSON, path: str = "") -> T:
    """Read `data` into the record type `cls`, checking every field against its annotation."""
    value: T = _read(cls, data, path)
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _read(annotation: Any, data: JSON, path: str) -> Any:
    if annotation is Any or annotation is object:
        return data
    origin = get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return _read_union(annotation, data, path)
    if origin is typing.Literal:
        if data not in get_args(annotation):
            raise RecordError(path, f"expected one of {list(get_args(annotation))}, got {_show(data)}")
        return data
    if origin in (tuple, list):
        if not isinstance(data, list):
            raise RecordError(path, f"expected a list, got {_show(data)}")
        args = get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(data) != len(args):
                raise RecordError(path, f"expected {len(args)} items, got {len(data)}")
            return tuple(_read(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, data, strict=True)))
        item = args[0] if args else Any
        items = [_read(item, v, f"{path}[{i}]") for i, v in enumerate(data)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or annotation is dict:
        if not isinstance(data, dict):
            raise RecordError(path, f"expected an object, got {_show(data)}")
        args = get_args(annotation)
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): _read(value_type, v, f"{path}.{k}") for k, v in data.items()}
    if isinstance(annotation, type):
        return _read_type(annotation, data, path)
    raise TypeError(f"{path}: cannot read the annotation {annotation!r}")


def _read_union(annotation: Any, data: JSON, path: str) -> Any:
    options = get_args(annotation)
    if data is None:
        if type(None) in options:
            return None
        raise RecordError(path, "is missing (null)")
    choices = [option for option in options if option is not type(None)]
    if len(choices) == 1:  # an optional field: the inner error names the exact place
        return _read(choices[0], data, path)
    problems = []
    for option in choices:
        try:
            return _read(option, data, path)
        except RecordError as exc:
            problems.append(exc.problem)
    raise RecordError(path, problems[0] if len(problems) == 1 else f"fits none of its types, got {_show(data)}")


def _read_type(cls: type, data: JSON, path: str) -> Any:
    if dataclasses.is_dataclass(cls):
        return _read_record(cls, data, path)
    if issubclass(cls, enum.Enum):
        try:
            return cls(data)
        except ValueError:
            valid = ", ".join(repr(m.value) for m in cls)
            raise RecordError(path, f"{_show(data)} is not one of {valid}") from None
    if cls is Path:
        if not isinstance(data, str):
            raise RecordError(path, f"expected a path string, got {_show(data)}")
        return Path(data)
    if cls is bool:
        if not isinstance(data, bool):
            raise RecordError(path, f"expected true or false, got {_show(data)}")
        return data
    if cls is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise RecordError(path, f"expected an integer, got {_show(data)}")
        return data
    if cls is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise RecordError(path, f"expected a number, got {_show(data)}")
        return float(data)
    if cls is str:
        if not isinstance(data, str):
            raise RecordError(path, f"expected a string, got {_show(data)}")
        return data
    raise TypeError(f"{path}: cannot read a {cls.__name__}")


def _read_record(cls: type, data: JSON, path: str) -> Any:
    if not isinstance(data, dict):
        raise RecordError(path, f"expected an object, got {_show(data)}")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        where = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(where, "is missing")
            continue
        values[f.name] = _read(hints[f.name], data[f.name], where)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise RecordError(path, str(exc)) from exc


def validate(data: JSON, schema_file: Path) -> None:
    """Check `data` against the JSON Schema in `schema_file`; the first problem is a RecordError naming its field."""
    import json

    import jsonschema

    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is None:
        return
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    raise RecordError(where, _schema_problem(error))


def _schema_problem(error: Any) -> str:
    value, rule, kind = _show(error.instance), error.validator_value, str(error.validator)
    if kind == "type":
        return f"expected {rule if isinstance(rule, str) else ' or '.join(map(str, rule))}, got {value}"
    if kind in ("maximum", "minimum"):
        return f"{value} is {'greater' if kind == 'maximum' else 'less'} than the {kind} {rule}"
    if kind == "pattern":
        return f"{value} does not match {rule!r}"
    if kind in ("enum", "const"):
        return f"{value} is not one of {rule if kind == 'enum' else [rule]}"
    if kind in ("maxLength", "minLength", "maxItems"):
        return f"{'longer than' if kind == 'maxLength' else 'shorter than' if kind == 'minLength' else 'more items than'} {rule}"
    return " ".join(str(error.message).split())[:200]


def _show(data: JSON) -> str:
    text = repr(data)
    return text if len(text) <= 60 else text[:57] + "..."
