"""The errors a step returns, one class per case of the WIT `error` variant.

Raise them from `check`, `plan`, `run` or `rollback`; the host decides
what to do from the class (only `Transient` is retried by a step's
`retries`). Host calls (`http.send`, `clock.sleep`, ...) raise them too,
so a denial or a cancellation passes through a step unchanged when it is
not caught.
"""

__all__ = [
    "StepError",
    "InvalidParams",
    "Denied",
    "Failed",
    "Transient",
    "Timeout",
    "Cancelled",
]


class StepError(Exception):
    """Base of every error a step reports to the host."""

    def message(self):
        return str(self)


class InvalidParams(StepError):
    """The parameters are wrong; shown at `path` in the runbook
    (`checks[1].expect_status`, or "" for the whole object)."""

    def __init__(self, path, message):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message


class Denied(StepError):
    """A capability call was outside the step's grants (raised by the host)."""

    def __init__(self, capability, requested, hint):
        super().__init__(f"{capability} denied: {requested} ({hint})")
        self.capability = capability
        self.requested = requested
        self.hint = hint


class Failed(StepError):
    """The step did its work and the work failed (a check did not pass)."""


class Transient(StepError):
    """A failure that may pass if tried again (connection refused, 503)."""


class Timeout(StepError):
    """A deadline passed."""


class Cancelled(StepError):
    """The run is being cancelled; return at once."""

    def __init__(self, message="cancelled"):
        super().__init__(message)


def to_wit(error):
    """The WIT `error` value of a `StepError`."""
    from wit_world.imports import types

    if isinstance(error, InvalidParams):
        return types.Error_InvalidParams(types.ParamError(path=error.path, message=error.reason))
    if isinstance(error, Denied):
        return types.Error_Denied(
            types.Denial(capability=error.capability, requested=error.requested, hint=error.hint)
        )
    if isinstance(error, Transient):
        return types.Error_Transient(str(error))
    if isinstance(error, Timeout):
        return types.Error_Timeout(str(error))
    if isinstance(error, Cancelled):
        return types.Error_Cancelled()
    return types.Error_Failed(str(error))


def from_wit(value):
    """The `StepError` of a WIT `error` value a host call returned."""
    from wit_world.imports import types

    if isinstance(value, types.Error_InvalidParams):
        return InvalidParams(value.value.path, value.value.message)
    if isinstance(value, types.Error_Denied):
        return Denied(value.value.capability, value.value.requested, value.value.hint)
    if isinstance(value, types.Error_Transient):
        return Transient(value.value)
    if isinstance(value, types.Error_Timeout):
        return Timeout(value.value)
    if isinstance(value, types.Error_Cancelled):
        return Cancelled()
    if isinstance(value, types.Error_Failed):
        return Failed(value.value)
    return Failed(repr(value))


def host_call(function, *args):
    """Calls a generated import, turning its `Err(error)` into a `StepError`."""
    from componentize_py_types import Err

    try:
        return function(*args)
    except Err as err:
        raise from_wit(err.value) from None
