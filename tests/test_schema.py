"""Schemas that share definitions: a ``$ref`` into another file is joined in when the schema is
read (the algorithm's own keys beside it winning), so defaults are filled and messages name the
field as before; a reference that does not resolve names the schema file."""

from __future__ import annotations

import pytest

from conftest import write_yaml
from semiseg.schema import ConfigError, read_schema, validate


def _schemas(tmp_path, ref):
    params = tmp_path / "workflow" / "schemas" / "params"
    write_yaml(params / "shared.defs.yaml", {"$defs": {"decay": {
        "type": "number", "minimum": 0, "maximum": 1, "default": 0.99, "description": "EMA decay."}}})
    write_yaml(params / "algo.schema.yaml", {"type": "object", "additionalProperties": False, "properties": {
        "ema_decay": {"$ref": ref}, "slow_decay": {"$ref": ref, "default": 0.999}}})
    return tmp_path


def test_a_shared_definition_fills_its_default_and_the_algorithm_may_override_it(tmp_path):
    schema = read_schema(_schemas(tmp_path, "shared.defs.yaml#/$defs/decay"), "params/algo")
    params = {}
    validate(params, schema, "algo.params")
    assert params == {"ema_decay": 0.99, "slow_decay": 0.999}
    assert schema["properties"]["slow_decay"]["description"] == "EMA decay."
    with pytest.raises(ConfigError, match=r"algo.params: invalid configuration\n  ema_decay: 1.5 is greater than the maximum of 1"):
        validate({"ema_decay": 1.5}, schema, "algo.params")


@pytest.mark.parametrize("ref, problem", [("shared.defs.yaml#/$defs/missing", "shared.defs.yaml has no /$defs/missing"),
                                          ("gone.yaml#/$defs/decay", "no file")])
def test_a_reference_that_does_not_resolve_names_the_schema_file(tmp_path, ref, problem):
    with pytest.raises(ConfigError, match="algo.schema.yaml: \\$ref") as err:
        read_schema(_schemas(tmp_path, ref), "params/algo")
    assert problem in str(err.value)
