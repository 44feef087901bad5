"""runbook_sdk: write a `runbook` step plugin in Python.

    from runbook_sdk import Step, Outcome, PlannedAction, log

    class Hello(Step):
        name = "hello"
        version = "0.1.0"
        description = "Says hello"
        params_schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": False,
        }
        idempotent = True

        def plan(self, params):
            return [PlannedAction.read(f"greet {params['name']}")]

        def run(self, params):
            print(f"hello, {params['name']}")          # a log line
            return Outcome("greeted", greeting=f"hello, {params['name']}")

Build it with `python -m runbook_sdk.build hello.py -o hello.wasm`: the
narrowest world for `capabilities`, componentize-py, then
`runbook plugin seal`.
"""

import json as _json
import sys as _sys
import traceback as _traceback

from . import log
from .errors import (
    Cancelled,
    Denied,
    Failed,
    InvalidParams,
    StepError,
    Timeout,
    Transient,
    host_call as _host_call,
    to_wit as _to_wit,
)
from .schema import SchemaError, apply_defaults, unresolved, validate

__version__ = "0.1.0"

__all__ = [
    "Step",
    "Outcome",
    "Wait",
    "PlannedAction",
    "StepError",
    "InvalidParams",
    "Denied",
    "Failed",
    "Transient",
    "Timeout",
    "Cancelled",
    "CAPABILITIES",
    "sleep",
    "remaining",
    "unresolved",
    "log",
]

#: The capabilities a plugin may declare, as `types.capability` names them.
CAPABILITIES = ("http", "kube", "aws", "secrets", "fs", "command")

#: Schema keys the host reads (the Rust SDK writes the same ones).
TRANSIENT_KEY = "x-runbook-transient"
NEEDED_WHEN_KEY = "x-runbook-needed-when"


class PlannedAction:
    """One thing `run` would do: `PlannedAction.read(...)` changes nothing,
    `PlannedAction.write(...)` changes something outside the runner."""

    def __init__(self, description, mutates):
        self.description = str(description)
        self.mutates = bool(mutates)

    @classmethod
    def read(cls, description):
        return cls(description, False)

    @classmethod
    def write(cls, description):
        return cls(description, True)

    def __repr__(self):
        return f"PlannedAction({self.description!r}, mutates={self.mutates})"


class Outcome:
    """What `run` returns when the step is done: a one-line summary and
    outputs later steps read as `${{ steps.ID.outputs.KEY }}`."""

    def __init__(self, summary, outputs=None, **more):
        self.summary = str(summary)
        self.outputs = {}
        for key, value in list((outputs or {}).items()) + list(more.items()):
            self.output(key, value)

    def output(self, key, value):
        """Adds an output (values are text; others are written as JSON)."""
        self.outputs[str(key)] = value if isinstance(value, str) else _json.dumps(value)
        return self

    def __repr__(self):
        return f"Outcome({self.summary!r}, {self.outputs!r})"


class Wait:
    """Not done yet: the host calls `round` again after `seconds` with
    `state` (any JSON value, at most 64 KiB once written) and shows
    `status` (`soak round 3/20`) in `runbook runs`."""

    def __init__(self, seconds, state, status):
        self.after_ms = int(seconds * 1000)
        self.state = state
        self.status = str(status)


class Step:
    """Base class of a step plugin. Set the class attributes, override
    `run` (or `round`), and, as needed, `check`, `plan` and `rollback`.

    Every method receives `params`: the step's `with` table, checked
    against `params_schema` (a failing field raises `InvalidParams` at its
    path) with the schema's `default`s filled in.
    """

    #: Short name, shown by `runbook plugin inspect` (`http-check-py`).
    name = None
    #: Semantic version of the plugin.
    version = "0.1.0"
    #: One line for `plugin inspect` and the audit report.
    description = ""
    #: JSON Schema of the parameters, as a dict.
    params_schema = {"type": "object", "additionalProperties": False}
    #: What the plugin needs to run: names from `CAPABILITIES`.
    capabilities = ()
    #: What it uses only with some parameters (a step without their grant still runs).
    optional_capabilities = ()
    #: Which failures are transient (retried by a step's `retries`), in
    #: words for the audit report; "" when none is.
    transient = ""
    #: Whether `run` may be repeated with the same effect (the host may
    #: re-run it after a crash without asking).
    idempotent = False

    def check(self, params):
        """What the schema cannot say; raise `InvalidParams(path, message)`.
        Skip values not known yet (`unresolved(value)`)."""

    def plan(self, params):
        """What `run` would do, as a list of `PlannedAction`; changes nothing."""
        return []

    def run(self, params):
        """Do the step in one call; return an `Outcome`."""
        raise NotImplementedError(f"{type(self).__name__} implements neither run nor round")

    def round(self, params, state):
        """Instead of `run`, for a step that holds for long: one round per
        call; return an `Outcome`, or a `Wait` to be called again with its
        state. `state` is None on the first call."""
        return self.run(params)

    def rollback(self, params, outputs):
        """Undo a `run` given its outputs (a dict); returns a summary."""
        return "nothing to roll back"

    # What the host calls, through `export`.

    @classmethod
    def full_schema(cls):
        schema = dict(cls.params_schema)
        schema.setdefault("$schema", "https://json-schema.org/draft/2020-12/schema")
        schema[TRANSIENT_KEY] = cls.transient
        return schema

    def parse(self, text):
        try:
            params = _json.loads(text) if text else {}
        except ValueError as error:
            raise InvalidParams("", f"the parameters are not JSON: {error}") from None
        try:
            validate(params, self.params_schema)
        except SchemaError as error:
            raise InvalidParams(error.path, error.message) from None
        return apply_defaults(params, self.params_schema)


def sleep(seconds):
    """Wait on the host (no busy loop). Raises `Cancelled` or `Timeout`
    when the run stops or the step's deadline passes first."""
    from wit_world.imports import clock

    _host_call(clock.sleep, max(0, int(seconds * 1000)))


def remaining():
    """Seconds left before the step's timeout."""
    from wit_world.imports import clock

    return clock.remaining() / 1000.0


def _capability(name):
    from wit_world.imports import types

    if name not in CAPABILITIES:
        raise ValueError(f"unknown capability {name!r}; expected one of {', '.join(CAPABILITIES)}")
    return getattr(types.Capability, name.upper())


def export(step_class):
    """The `WitWorld` class componentize-py exports, around a `Step`."""
    from componentize_py_types import Err
    from wit_world.imports import types

    if not (isinstance(step_class, type) and issubclass(step_class, Step)):
        raise TypeError(f"{step_class!r} is not a subclass of runbook_sdk.Step")
    step = step_class()
    log.route_stdio()

    def call(function, *args):
        try:
            return function(*args)
        except StepError as error:
            raise Err(_to_wit(error)) from None
        except Exception:
            # A bug in the plugin: its traceback goes to the log, and the
            # step fails naming the exception (a crash in Rust terms).
            kind, value, _ = _sys.exc_info()
            for line in _traceback.format_exc().rstrip().splitlines():
                log.error(line)
            raise Err(types.Error_Failed(f"the plugin raised {kind.__name__}: {value}")) from None
        finally:
            log.flush_stdio()

    def planned(actions):
        return [types.PlannedAction(description=a.description, mutates=a.mutates) for a in actions or []]

    def result(value):
        if isinstance(value, Wait):
            state = value.state if isinstance(value.state, str) else _json.dumps(value.state)
            return types.RunResult_Wait(types.Wait(after_ms=value.after_ms, state=state, status=value.status))
        if isinstance(value, str):
            value = Outcome(value)
        if not isinstance(value, Outcome):
            raise TypeError(f"run returned {value!r}; return an Outcome or a Wait")
        return types.RunResult_Done(
            types.Outcome(outputs=list(value.outputs.items()), summary=value.summary)
        )

    class WitWorld:
        def describe(self):
            return types.Descriptor(
                name=step_class.name or step_class.__name__,
                version=step_class.version,
                description=step_class.description,
                params_schema=_json.dumps(step_class.full_schema()),
                capabilities=[_capability(name) for name in step_class.capabilities],
                optional_capabilities=[_capability(name) for name in step_class.optional_capabilities],
                idempotent=bool(step_class.idempotent),
            )

        def check(self, params):
            def go():
                step.check(step.parse(params))

            call(go)

        def plan(self, params):
            def go():
                parsed = step.parse(params)
                step.check(parsed)
                return planned(step.plan(parsed))

            return call(go)

        def run(self, params, state):
            def go():
                parsed = step.parse(params)
                step.check(parsed)
                given = None
                if state is not None:
                    try:
                        given = _json.loads(state)
                    except ValueError:
                        given = state
                return result(step.round(parsed, given))

            return call(go)

        def rollback(self, params, outputs):
            def go():
                summary = step.rollback(step.parse(params), dict(outputs))
                return str(summary if summary is not None else "rolled back")

            return call(go)

    return WitWorld
