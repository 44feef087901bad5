"""The SDK's pure Python parts, on the build machine's CPython:
`python3 -m unittest discover plugins/sdk-python/tests`."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from runbook_sdk import InvalidParams, Step, unresolved  # noqa: E402
from runbook_sdk.build import capabilities_section, narrowest_world, world_interfaces, WIT_FILE  # noqa: E402
from runbook_sdk.schema import SchemaError, apply_defaults, validate  # noqa: E402

STATUS = {"type": "integer", "minimum": 100, "maximum": 599}
SCHEMA = {
    "type": "object",
    "properties": {
        "checks": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "url": {"type": "string"},
                    "method": {"enum": ["GET", "HEAD"], "default": "GET"},
                    "expect_status": {"anyOf": [STATUS, {"type": "array", "items": STATUS}], "default": 200},
                },
                "required": ["url"],
                "additionalProperties": False,
            },
        },
        "timeout": {"type": "number", "minimum": 0, "default": 10},
    },
    "required": ["checks"],
    "additionalProperties": False,
}


def error_of(value, schema=SCHEMA):
    try:
        validate(value, schema)
    except SchemaError as error:
        return error.path, error.message
    return None


class Schema(unittest.TestCase):
    def test_a_valid_value_passes_and_defaults_are_filled_in(self):
        value = {"checks": [{"url": "http://x"}]}
        self.assertIsNone(error_of(value))
        self.assertEqual(
            apply_defaults(value, SCHEMA),
            {"checks": [{"url": "http://x", "method": "GET", "expect_status": 200}], "timeout": 10},
        )

    def test_errors_name_the_path(self):
        self.assertEqual(error_of({}), ("checks", "missing required field"))
        self.assertEqual(error_of({"checks": [{"url": "a"}, {}]}), ("checks[1].url", "missing required field"))
        self.assertEqual(
            error_of({"checks": [{"url": 3}]}), ("checks[0].url", "expected string, got integer 3")
        )
        self.assertEqual(
            error_of({"checks": [{"url": "a", "method": "POST"}]}),
            ("checks[0].method", 'expected one of "GET", "HEAD", got "POST"'),
        )
        self.assertEqual(
            error_of({"checks": [{"url": "a", "expect_status": [200, 700]}]}),
            ("checks[0].expect_status[1]", "expected at most 599, got 700"),
        )
        self.assertEqual(
            error_of({"checks": [{"url": "a", "extra": 1}]})[0], "checks[0].extra"
        )
        self.assertEqual(error_of({"checks": []}), ("checks", "expected at least 1 items, got 0"))
        self.assertEqual(error_of({"checks": [{"url": "a"}], "timeout": -1}), ("timeout", "expected at least 0, got -1"))

    def test_booleans_are_not_integers_and_placeholders_fit_any_type(self):
        self.assertIsNotNone(error_of({"checks": [{"url": "a", "expect_status": True}]}))
        self.assertIsNone(error_of({"checks": [{"url": "a", "expect_status": "<params.status>"}]}))
        self.assertTrue(unresolved("v<steps.build.outputs.tag>-rc"))
        self.assertFalse(unresolved("a > b"))

    def test_refs_resolve(self):
        schema = {"$defs": {"n": {"type": "integer"}}, "type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}}
        self.assertEqual(error_of({"a": "x"}, schema), ("a", 'expected integer, got string "x"'))


class Parse(unittest.TestCase):
    def test_invalid_params_carry_the_path(self):
        class Probe(Step):
            params_schema = SCHEMA

        with self.assertRaises(InvalidParams) as raised:
            Probe().parse('{"checks": [{"url": 1}]}')
        self.assertEqual(raised.exception.path, "checks[0].url")
        with self.assertRaises(InvalidParams) as raised:
            Probe().parse("{not json")
        self.assertEqual(raised.exception.path, "")


class Build(unittest.TestCase):
    def wit(self):
        with open(WIT_FILE) as file:
            return file.read()

    def test_the_narrowest_world_has_exactly_what_is_needed(self):
        wit = self.wit()
        self.assertEqual(narrowest_world(set(), wit), "step-base")
        self.assertEqual(narrowest_world({"http"}, wit), "step-http")
        self.assertEqual(narrowest_world({"http", "secrets"}, wit), "step-http-secrets")
        self.assertEqual(narrowest_world({"kube", "http"}, wit), "step-kube-http")
        self.assertEqual(narrowest_world({"kube", "aws"}, wit), "step")

    def test_secrets_import_their_interface_only_when_handles_are_looked_up_by_name(self):
        class Checker(Step):
            capabilities = ["http"]
            optional_capabilities = ["secrets", "fs"]

        self.assertEqual(world_interfaces(Checker, False), {"http"})
        self.assertEqual(world_interfaces(Checker, True), {"http", "secrets"})
        self.assertEqual(capabilities_section(Checker), b"http,secrets?,fs?")


if __name__ == "__main__":
    unittest.main()
