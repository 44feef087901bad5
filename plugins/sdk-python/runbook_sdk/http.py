"""HTTP through the host's `http` interface, within the step's `grants.http`.

    response = http.get(url, headers={"X-API-Key": params["key"]}, timeout=10)
    response.status, response.text(), response.json(), response.elapsed_ms

A URL outside the grants raises `Denied`; a connection that fails raises
`Transient`; `timeout` raises `Timeout`. Header values and the body may
hold sealed secret handles (`${{ secrets.NAME }}`): the host puts the
secret in only on the way to a granted URL. Needs a world with `http`
(`capabilities = ["http"]`).
"""

import json as _json

from .errors import host_call

__all__ = ["Response", "request", "get", "head", "post", "put", "delete"]


class Response:
    """What the service answered."""

    def __init__(self, status, headers, body, elapsed_us, final_url):
        self.status = status
        #: Every header as (name, value), in the order received.
        self.headers = headers
        #: The body as bytes.
        self.body = body
        self.elapsed_us = elapsed_us
        self.final_url = final_url

    @property
    def elapsed_ms(self):
        """Time from sending to the end of the body, in milliseconds."""
        return self.elapsed_us / 1000.0

    def header(self, name):
        """The first value of a header, by case-insensitive name, or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        return _json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} from {self.final_url} in {self.elapsed_ms:.1f} ms>"


def request(
    method,
    url,
    headers=None,
    body=None,
    json=None,
    timeout=None,
    follow_redirects=False,
    basic_auth=None,
):
    """Send one request through the host.

    `headers` is a dict or a list of pairs; `body` text or bytes; `json` a
    value sent as JSON (sets content-type); `timeout` in seconds (the host
    caps it at the step's deadline); `basic_auth` a (user, password) pair,
    the password may be a secret handle.
    """
    from wit_world.imports import http as wit_http

    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if json is not None:
        if body is not None:
            raise ValueError("give `body` or `json`, not both")
        body = _json.dumps(json)
        if not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("content-type", "application/json"))
    if isinstance(body, str):
        body = body.encode("utf-8")
    wit_request = wit_http.Request(
        method=method.upper(),
        url=url,
        headers=[(str(name), str(value)) for name, value in pairs],
        body=body,
        body_file=None,
        basic_auth=tuple(basic_auth) if basic_auth else None,
        timeout_ms=None if timeout is None else int(timeout * 1000),
        follow_redirects=bool(follow_redirects),
    )
    answer = host_call(wit_http.send, wit_request)
    return Response(
        answer.status,
        list(answer.headers),
        bytes(answer.body),
        answer.elapsed_us,
        answer.final_url,
    )


def get(url, **options):
    return request("GET", url, **options)


def head(url, **options):
    return request("HEAD", url, **options)


def post(url, **options):
    return request("POST", url, **options)


def put(url, **options):
    return request("PUT", url, **options)


def delete(url, **options):
    return request("DELETE", url, **options)
