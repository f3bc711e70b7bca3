"""Reading and validating the configuration files against the JSON schemas of
``workflow/schemas/``: the validator (which also fills in defaults), the messages that name the
file, field and what is allowed, and the checks JSON Schema cannot express (NaN and infinite
numbers; digit strings from Snakemake's ``--config``). :mod:`semiseg.config` loads and resolves
the configuration with them.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

__all__ = ["ConfigError", "command_line_values", "find_root", "read_schema", "read_yaml", "validate"]


class ConfigError(ValueError):
    """A configuration file or field is wrong; the message names the file and the field."""


def find_root(start: Path | None = None) -> Path:
    """The workflow root: the nearest parent of `start` (default: cwd) holding `workflow/schemas`."""
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "workflow" / "schemas").is_dir():
            return p
    raise ConfigError(f"{here}: no workflow/schemas directory here or above; run from the semiseg checkout")


def _with_defaults(cls):
    """A validator class that also fills in `default` values (jsonschema's documented recipe)."""
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(Draft202012Validator)


def _field(path) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(top level)"


def _describe(error) -> str:
    """Turn a jsonschema error into 'field: problem; allowed: ...'."""
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = _field(error.absolute_path)
        field = ".".join([where, extra[0]]) if where != "(top level)" and extra else (extra[0] if extra else where)
        return f"{field}: unknown field; allowed: {', '.join(allowed) or '(none)'}"
    if error.validator == "enum":
        return f"{_field(error.absolute_path)}: {error.instance!r} is not allowed; allowed: {', '.join(map(repr, error.validator_value))}"
    if error.validator == "pattern" and error.schema.get("description"):  # a name checked by propertyNames
        return f"{_field(error.absolute_path)}: {error.instance!r} is not allowed; allowed: {error.schema['description']}"
    if error.validator == "propertyNames":
        return f"{_field(error.absolute_path)}: name {error.instance!r} must be lowercase letters, digits and _"
    return f"{_field(error.absolute_path)}: {error.message}"


def _not_finite(instance: Any, path: tuple = ()) -> list[str]:
    """'field: nan is not a finite number' for every NaN or infinite number in `instance` (JSON
    Schema's ``type: number`` and bounds let them through: NaN compares false with every bound)."""
    if isinstance(instance, float) and not math.isfinite(instance):
        return [f"{_field(path)}: {instance} is not a finite number; allowed: finite numbers"]
    if isinstance(instance, dict):
        return [m for k, v in instance.items() for m in _not_finite(v, (*path, k))]
    if isinstance(instance, list):
        return [m for i, v in enumerate(instance) for m in _not_finite(v, (*path, i))]
    return []


def validate(instance: Any, schema: dict, source: str) -> None:
    errors = sorted(_Validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    problems = _not_finite(instance) + [_describe(e) for e in errors]
    if problems:
        lines = "\n  ".join(problems[:10])
        raise ConfigError(f"{source}: invalid configuration\n  {lines}")


def command_line_values(settings: dict, schema: dict) -> None:
    """Turn digit strings into integers where the schema wants integers (top-level fields and the
    items of integer lists): Snakemake's ``--config 'seeds=[0]'`` hands list items over as
    strings. Anything else is left for the schema to judge."""
    def as_int(value):
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        return value

    for name, sub in schema.get("properties", {}).items():
        if name not in settings or not isinstance(sub, dict):
            continue
        types = sub.get("type") if isinstance(sub.get("type"), list) else [sub.get("type")]
        if "integer" in types:
            settings[name] = as_int(settings[name])
        elif "array" in types and sub.get("items", {}).get("type") == "integer" and isinstance(settings[name], list):
            settings[name] = [as_int(v) for v in settings[name]]


def read_yaml(path: Path) -> Any:
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return {} if data is None else data


def read_schema(root: Path, name: str) -> dict:
    """``workflow/schemas/<name>.schema.yaml`` under the workflow root (``name`` may name a
    sub-folder: ``params/mean_teacher``), with its references to other files joined in."""
    path = root / "workflow" / "schemas" / f"{name}.schema.yaml"
    return _join_refs(read_yaml(path), path, {})


def _join_refs(node: Any, path: Path, files: dict) -> Any:
    """`node` with every ``{"$ref": "<file>#/<pointer>", ...}`` that names another file replaced by
    the definition it points to, the keys beside the ``$ref`` taking the place of the
    definition's (a method's own ``default``). A reference within the file (``#/...``) is left to
    the validator. Joined, the schema is one plain document: the validator fills in the defaults
    it sees, and a message names the field as it would without the reference."""
    if isinstance(node, list):
        return [_join_refs(v, path, files) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _join_refs(v, path, files) for k, v in node.items()}
    ref = node.get("$ref")
    if not isinstance(ref, str) or ref.startswith("#"):
        return out
    file, _, pointer = ref.partition("#")
    target_path = (path.parent / file).resolve()
    if not target_path.is_file():
        raise ConfigError(f"{path}: $ref {ref!r}: no file {target_path}")
    if target_path not in files:
        files[target_path] = read_yaml(target_path)
    target = files[target_path]
    for part in [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/") if p]:
        if not isinstance(target, dict) or part not in target:
            raise ConfigError(f"{path}: $ref {ref!r}: {target_path.name} has no {pointer}")
        target = target[part]
    del out["$ref"]
    return {**_join_refs(copy.deepcopy(target), target_path, files), **out}
