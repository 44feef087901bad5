"""http-check-py: GET (or HEAD) each URL and compare its status and body.

A Python subset of smoke-test, built with runbook_sdk: every URL must be
granted in `grants.http`; a failure names the check and what differed; a
service that does not answer, or answers 5xx, is a transient failure the
step's `retries` may try again.
"""

from runbook_sdk import (
    Cancelled,
    Denied,
    Failed,
    InvalidParams,
    Outcome,
    PlannedAction,
    Step,
    StepError,
    Transient,
    http,
    log,
)

STATUS = {"type": "integer", "minimum": 100, "maximum": 599}

CHECK = {
    "type": "object",
    "description": "One HTTP check.",
    "properties": {
        "name": {"type": "string", "minLength": 1, "description": "Used in messages and as the output key (default `check-N`)."},
        "url": {"type": "string", "description": "The URL; it must be granted to the step in `grants.http`."},
        "method": {"type": "string", "enum": ["GET", "HEAD"], "default": "GET", "description": "GET or HEAD: a check changes nothing."},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "default": {},
            "description": "Request headers; values may hold `${{ secrets.NAME }}`.",
        },
        "expect_status": {
            "anyOf": [STATUS, {"type": "array", "items": STATUS, "minItems": 1}],
            "default": 200,
            "description": "Expected status: a number or a list of numbers.",
        },
        "expect_body_contains": {"type": "string", "description": "Text the body must contain."},
    },
    "required": ["url"],
    "additionalProperties": False,
}


class HttpCheck(Step):
    name = "http-check-py"
    version = "0.1.0"
    description = "Checks HTTP endpoints' status and body text (Python, runbook_sdk)"
    params_schema = {
        "type": "object",
        "properties": {
            "checks": {"type": "array", "items": CHECK, "minItems": 1, "description": "The checks, run in order."},
            "request_timeout_ms": {
                "type": "integer",
                "minimum": 1,
                "maximum": 600000,
                "default": 10000,
                "description": "Timeout of each request, in milliseconds.",
            },
        },
        "required": ["checks"],
        "additionalProperties": False,
    }
    capabilities = ["http"]
    # A check's headers may hold a secret (`X-API-Key`).
    optional_capabilities = ["secrets"]
    transient = "checks that fail only because the service did not answer (a refused or lost connection, a timeout) or answered 5xx"
    idempotent = True

    def check(self, params):
        names = set()
        for index, check in enumerate(params["checks"]):
            name = check_name(check, index)
            if name in names:
                raise InvalidParams(f"checks[{index}].name", f"two checks are named `{name}`")
            names.add(name)

    def plan(self, params):
        return [PlannedAction.read(describe(check)) for check in params["checks"]]

    def run(self, params):
        checks = params["checks"]
        timeout = params["request_timeout_ms"] / 1000
        outcome = Outcome("")
        failures = []
        all_unavailable = True
        for index, check in enumerate(checks):
            name = check_name(check, index)
            try:
                line = run_check(check, timeout)
            except Unavailable as reason:
                failures.append(f"check `{name}` ({check['method']} {check['url']}): {reason}")
                continue
            except Wrong as reason:
                all_unavailable = False
                failures.append(f"check `{name}` ({check['method']} {check['url']}): {reason}")
                continue
            # print() is a log line of the step (info).
            print(f"✓ {name}: {check['method']} {check['url']} → {line}")
            outcome.output(name, line)
            log.progress(f"{index + 1} of {len(checks)} checks done", (index + 1) / len(checks))
        if failures:
            message = f"{len(failures)} of {len(checks)} checks failed:\n" + "\n".join(failures)
            # A service that did not answer, or answered 5xx, may be back
            # later; a wrong answer would only repeat.
            raise Transient(message) if all_unavailable else Failed(message)
        count = len(checks)
        outcome.summary = f"{count} check{'' if count == 1 else 's'} passed"
        return outcome

    # Nothing to roll back: the checks change nothing (the default).


class Wrong(Exception):
    """The service answered, and not as expected."""


class Unavailable(Exception):
    """The service did not answer, or answered 5xx."""


def check_name(check, index):
    return check.get("name") or f"check-{index + 1}"


def expected(check):
    status = check["expect_status"]
    return status if isinstance(status, list) else [status]


def describe(check):
    text = f"{check['method']} {check['url']}, expect {' or '.join(map(str, expected(check)))}"
    if "expect_body_contains" in check:
        text += f", body contains {check['expect_body_contains']!r}"
    return text


def run_check(check, timeout):
    """Sends the request; returns `200 in 3.1 ms`, or raises Wrong or Unavailable."""
    try:
        response = http.request(check["method"], check["url"], headers=check["headers"], timeout=timeout)
    except (Denied, Cancelled, InvalidParams):
        raise  # not the service's doing: the step fails with it as it is
    except StepError as error:
        raise Unavailable(error.message()) from None
    statuses = expected(check)
    if response.status not in statuses:
        excerpt = response.text()[:200].strip()
        reason = f"expected status {' or '.join(map(str, statuses))}, got {response.status}"
        if excerpt:
            reason += f" (body: {excerpt})"
        raise (Unavailable if response.status >= 500 else Wrong)(reason)
    needle = check.get("expect_body_contains")
    if needle is not None and needle not in response.text():
        raise Wrong(f"expected the body to contain {needle!r}, it does not")
    return f"{response.status} in {response.elapsed_ms:.1f} ms"
