"""Sealed secrets. A plugin never sees a secret's value.

A parameter the runbook writes as `${{ secrets.NAME }}` already holds a
sealed handle (`@@runbook-secret/NAME/NONCE@@`): put it in a header value
or a body, alone or inside text (`f"Bearer {token}"`), and the host swaps
the value in on the way to a granted URL. `handle(name)` gives the handle
of a secret the step is granted by name (`grants.secrets`); it needs a
world with `secrets` (`capabilities = ["secrets"]`).
"""

from .errors import host_call

__all__ = ["handle", "is_handle"]


def handle(name):
    """The sealed handle of a granted secret; `Denied` if not granted."""
    from wit_world.imports import secrets as wit_secrets

    return host_call(wit_secrets.handle, name)


def is_handle(value):
    """Whether a string holds a sealed secret handle."""
    return isinstance(value, str) and "@@runbook-secret/" in value
