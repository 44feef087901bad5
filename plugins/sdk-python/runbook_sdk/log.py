"""Logs and progress through the host's `log` interface.

The operator sees these lines live; the run log keeps them. `print()`
works too: the SDK routes `sys.stdout` to `info` lines and `sys.stderr`
to `warn` lines (a traceback included), one log line per printed line.
"""

import io
import sys

from .errors import host_call

__all__ = [
    "trace",
    "debug",
    "info",
    "warn",
    "error",
    "progress",
    "milestone",
    "checkpoint",
]


def _emit(level_name, message):
    from wit_world.imports import log as wit_log

    wit_log.log(getattr(wit_log.Level, level_name), str(message))


def trace(message):
    _emit("TRACE", message)


def debug(message):
    _emit("DEBUG", message)


def info(message):
    _emit("INFO", message)


def warn(message):
    _emit("WARN", message)


def error(message):
    _emit("ERROR", message)


def progress(message, fraction=None):
    """Report progress on long work; `fraction` between 0 and 1 when known."""
    from wit_world.imports import log as wit_log

    wit_log.progress(str(message), None if fraction is None else float(fraction))


def milestone(message):
    """A moment the run's notifications send (a canary reached 25%)."""
    from wit_world.imports import log as wit_log

    wit_log.milestone(str(message))


def checkpoint(key, value):
    """Record, before changing anything, a value `rollback` will need.

    The host has it on disk before this returns and gives it to
    `rollback` among the outputs under `key`; the first value of a key is
    kept when the step runs again. Raises `Failed` when the run can no
    longer be recorded: then change nothing.
    """
    from wit_world.imports import log as wit_log

    host_call(wit_log.checkpoint, str(key), str(value))


class LogStream(io.TextIOBase):
    """A text stream whose complete lines become log lines at one level."""

    def __init__(self, level_name, name):
        super().__init__()
        self._level = level_name
        self._name = name
        self._pending = ""

    @property
    def name(self):
        return self._name

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, text):
        if not isinstance(text, str):
            text = str(text)
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            _emit(self._level, line)
        return len(text)

    def flush(self):
        if self._pending:
            line, self._pending = self._pending, ""
            _emit(self._level, line)


def route_stdio():
    """Make `sys.stdout` and `sys.stderr` the step's log (info and warn)."""
    if not isinstance(sys.stdout, LogStream):
        sys.stdout = LogStream("INFO", "<stdout>")
    if not isinstance(sys.stderr, LogStream):
        sys.stderr = LogStream("WARN", "<stderr>")


def flush_stdio():
    """Write out a last line printed without its newline."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, LogStream):
            stream.flush()
