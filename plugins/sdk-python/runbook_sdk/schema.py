"""A small JSON Schema validator for the subset step parameters use.

Supported keywords: `type` (a name or a list of names), `properties`,
`required`, `additionalProperties` (false or a schema), `items`, `enum`,
`const`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`,
`minLength`, `maxLength`, `minItems`, `maxItems`, `pattern`, `anyOf`,
`oneOf` (as anyOf), `default` (filled in by `apply_defaults`), and `$ref`
to `#/$defs/NAME` or `#/definitions/NAME`. Other keywords are ignored.

Errors name the path the host shows at its place in the runbook:
`checks[1].expect_status`, or the empty string for the whole object.
"""

import copy
import re

__all__ = ["SchemaError", "validate", "apply_defaults", "unresolved"]


class SchemaError(Exception):
    """A value does not fit the schema at `path`."""

    def __init__(self, path, message):
        super().__init__(f"{path or '(parameters)'}: {message}")
        self.path = path
        self.message = message


def unresolved(value):
    """Whether a string is a placeholder for a value not known yet.

    While a runbook is validated or planned, a value that comes from a
    parameter not given or from an earlier step's output is a placeholder
    naming it (`<params.version>`, `v<steps.build.outputs.tag>`).
    """
    if not isinstance(value, str):
        return False
    start = value.find("<")
    return start >= 0 and ">" in value[start:]


def _join(path, key):
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_of(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _fits_type(value, name):
    actual = _type_of(value)
    if name == "number":
        return actual in ("integer", "number")
    if name == "integer" and actual == "number":
        return float(value).is_integer()
    return actual == name


def _resolve(schema, root):
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix):
                name = ref[len(prefix):]
                table = root.get(prefix[2:-1], {})
                if name not in table:
                    raise SchemaError("", f"the schema refers to {ref}, which it does not define")
                schema = table[name]
                break
        else:
            raise SchemaError("", f"unsupported $ref {ref}")
        seen += 1
        if seen > 32:
            raise SchemaError("", f"$ref loop at {ref}")
    return schema


def _show(value):
    import json

    return json.dumps(value)


def validate(value, schema, path="", root=None):
    """Raises `SchemaError` at the first place `value` does not fit `schema`.

    A string placeholder (see `unresolved`) fits any type: its value is
    not known yet.
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if schema is True or schema is None or schema == {}:
        return
    if schema is False:
        raise SchemaError(path, "no value is allowed here")
    if unresolved(value):
        return

    for key in ("anyOf", "oneOf"):
        if key in schema:
            errors = []
            for option in schema[key]:
                try:
                    validate(value, option, path, root)
                    break
                except SchemaError as error:
                    errors.append(error)
            else:
                deepest = max(errors, key=lambda error: len(error.path))
                if deepest.path != path:
                    raise deepest
                raise SchemaError(path, "; or ".join(error.message for error in errors))

    expected = schema.get("type")
    if expected is not None:
        names = expected if isinstance(expected, list) else [expected]
        if not any(_fits_type(value, name) for name in names):
            raise SchemaError(
                path,
                f"expected {' or '.join(names)}, got {_type_of(value)} {_show(value)}",
            )

    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(_show(choice) for choice in schema["enum"])
        raise SchemaError(path, f"expected one of {choices}, got {_show(value)}")
    if "const" in schema and value != schema["const"]:
        raise SchemaError(path, f"expected {_show(schema['const'])}, got {_show(value)}")

    if _type_of(value) in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(path, f"expected at least {schema['minimum']}, got {value}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(path, f"expected at most {schema['maximum']}, got {value}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            raise SchemaError(path, f"expected more than {schema['exclusiveMinimum']}, got {value}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            raise SchemaError(path, f"expected less than {schema['exclusiveMaximum']}, got {value}")

    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise SchemaError(path, f"expected at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(path, f"expected at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SchemaError(path, f"expected text matching {schema['pattern']}, got {_show(value)}")

    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SchemaError(path, f"expected at least {schema['minItems']} items, got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(path, f"expected at most {schema['maxItems']} items, got {len(value)}")
        items = schema.get("items")
        if isinstance(items, (dict, bool)):
            for index, item in enumerate(value):
                validate(item, items, _join(path, index), root)

    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                raise SchemaError(_join(path, name), "missing required field")
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                validate(item, properties[name], _join(path, name), root)
            elif additional is False:
                known = ", ".join(f"`{known}`" for known in properties) or "none"
                raise SchemaError(_join(path, name), f"unknown field `{name}`, expected one of {known}")
            elif isinstance(additional, dict):
                validate(item, additional, _join(path, name), root)


def apply_defaults(value, schema, root=None):
    """`value` with every absent property that has a `default` filled in,
    recursively (objects and array items). Returns a new value."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        result = dict(value)
        for name, item in schema.get("properties", {}).items():
            item_schema = _resolve(item, root)
            if name not in result and isinstance(item_schema, dict) and "default" in item_schema:
                result[name] = copy.deepcopy(item_schema["default"])
            if name in result:
                result[name] = apply_defaults(result[name], item, root)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"], root) for item in value]
    return value
