"""What both web servers (``serve`` and ``app``) need against abuse: a cap on request bodies and on
the time they take to arrive, a deadline for request heads, a check of the ``Host`` header, JSON
for every error (including the ones that should never happen), and no network exposure without a key.

    guard(app, body_limit=1_048_576, timeouts=Timeouts(), check_host=True)
    json_500(app)
    uvicorn_server(app, "127.0.0.1", 8000, Timeouts()).run()
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
import time
import traceback
from dataclasses import dataclass

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class Timeouts:
    head_s: float = 10.0        # from the connection (or the previous answer) to a complete request head
    body_s: float = 30.0        # from a complete head to a complete body
    keep_alive_s: float = 5.0   # an idle kept-alive connection is closed after this


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """The OpenAI error shape both servers answer with (text that cannot be UTF-8 is escaped)."""
    return {"error": {"message": printable(message), "type": kind, "param": printable(param), "code": code}}


# pydantic error types for a text that is not valid Unicode (tunelab's validator, and pydantic's own
# for a constrained string): both servers answer them with a 400 naming the field.
UNICODE_ERRORS = ("invalid_unicode", "string_unicode")


def valid_unicode(text: str) -> bool:
    """Whether ``text`` can be encoded as UTF-8 (JSON escapes can smuggle in lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str | None) -> str | None:
    """``text`` with lone surrogates escaped, so that it can be sent as UTF-8."""
    return None if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_reply(status: int, body: dict, close: bool = False):
    """The two ASGI messages of a small JSON answer."""
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": data})


# Bodies up to this size are read (and dropped) before the 413 goes out; larger ones are cut off.
MAX_DRAINED = 64 * 1024 * 1024


def body_timeout_error(seconds: float):
    from starlette.exceptions import HTTPException

    return HTTPException(408, f"the request body did not arrive within {seconds:g} s", headers={"Connection": "close"})


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with a 413, before reading them whole,
    and bodies that take longer than ``timeout_s`` to arrive with a 408 (closing the connection).

    A declared Content-Length over the limit is refused at once; a chunked body is counted as it
    arrives and refused when it passes the limit. ``larger`` gives some paths (uploads) a limit of their own.
    """

    def __init__(self, app, limit: int, timeout_s: float | None = None, larger: dict[str, int] | None = None):
        self.app, self.limit, self.timeout_s, self.larger = app, limit, timeout_s, dict(larger or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.larger.get(scope.get("path", ""), self.limit)
        receive = self._with_deadline(receive)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            if declared.isdigit() and int(declared) <= MAX_DRAINED:
                await self._drain(receive)
            return await self._refuse(send, limit)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                from starlette.exceptions import HTTPException

                if message.get("more_body"):
                    await self._drain(receive)
                raise HTTPException(413, self._message(limit))
            return message

        await self.app(scope, counted, send)

    def _with_deadline(self, receive):
        """``receive`` that raises a 408 once the body has taken longer than ``timeout_s`` to arrive;
        after the last piece of the body it waits freely (a streaming answer listens for the disconnect)."""
        if self.timeout_s is None:
            return receive
        deadline, body_done = time.monotonic() + self.timeout_s, False

        async def timed():
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                raise body_timeout_error(self.timeout_s) from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        return timed

    @staticmethod
    async def _drain(receive) -> None:
        """Read the rest of the body and drop it: a client still sending when the answer comes and the
        connection closes would see a reset instead of the 413. A client too slow to drain is cut."""
        from starlette.exceptions import HTTPException

        seen = 0
        try:
            while seen <= MAX_DRAINED:
                message = await receive()
                seen += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body"):
                    return
        except HTTPException:
            return

    @staticmethod
    def _message(limit: int) -> str:
        return f"request body larger than this server's limit of {limit:,} bytes"

    async def _refuse(self, send, limit: int) -> None:
        for message in json_reply(413, error_body(self._message(limit), code="request_too_large"), close=True):
            await send(message)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) means this machine only."""
    host = host.strip().lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port: ``[::1]:8000`` -> ``::1``."""
    header = header.strip()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class LoopbackHostOnly:
    """ASGI middleware for a server bound to this machine only: answer only requests whose ``Host``
    header names this machine (localhost, 127.0.0.1, [::1], any port). A web page on another site
    that rebinds its DNS name to 127.0.0.1 sends its own name and is refused with a 421. ``allowed``:
    further names to answer (a reverse proxy or an SSH tunnel that reaches the server under one)."""

    def __init__(self, app, allowed: tuple[str, ...] = ()):
        self.app, self.allowed = app, {name.strip().lower() for name in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        name = host_name(given)
        if is_loopback(name) or name.strip().lower() in self.allowed:
            return await self.app(scope, receive, send)
        message = (f"Host {given!r} is not this machine's; this server is bound to a loopback address and "
                   "answers only localhost, 127.0.0.1 and [::1] (add a name with --allowed-host)")
        for reply in json_reply(421, error_body(message, code="misdirected_request"), close=True):
            await send(reply)


def guard(app, body_limit: int, timeouts: Timeouts, check_host: bool, allowed_hosts: tuple[str, ...] = (),
          larger_bodies: dict[str, int] | None = None) -> None:
    """Add the middleware against abuse to a FastAPI app (the Host check outermost); ``larger_bodies`` maps
    paths to body limits of their own."""
    app.add_middleware(BodyLimit, limit=body_limit, timeout_s=timeouts.body_s, larger=larger_bodies)
    if check_host:
        app.add_middleware(LoopbackHostOnly, allowed=tuple(allowed_hosts))


def usable_key(api_key: str | None) -> str | None:
    """The API key, or None when there is none: an empty or blank key (``TUNELAB_API_KEY=``) is no key."""
    return api_key.strip() or None if api_key else None


def refuse_open_without_key(host: str, api_key: str | None, command: str) -> None:
    """A server reachable from other machines must have a key."""
    if usable_key(api_key) is None and not is_loopback(host):
        raise TunelabError(f"--host {host} makes tunelab {command} reachable from other machines: set an API key "
                           f"first (TUNELAB_API_KEY=... tunelab {command} ...), or bind 127.0.0.1")


def head_deadline_protocol(seconds: float):
    """uvicorn's h11 protocol, closing connections whose request head is not complete ``seconds`` after
    the connection opened or the previous answer went out (uvicorn has no such limit of its own)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadDeadline(H11Protocol):
        head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self._arm()  # waiting for a head: the keep-alive timer is cancelled on any byte
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _too_slow(self) -> None:
            self.head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeadDeadline


def uvicorn_server(app, host: str, port: int, timeouts: Timeouts, log_level: str = "warning"):
    """A uvicorn server for ``app`` with tunelab's deadlines on heads, bodies and idle connections."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, http=head_deadline_protocol(timeouts.head_s),
                            timeout_keep_alive=timeouts.keep_alive_s)
    return uvicorn.Server(config)


def json_500(app) -> None:
    """A bug still answers in JSON (and prints its traceback on the server), never an HTML page."""
    from fastapi.responses import JSONResponse

    @app.exception_handler(Exception)
    async def _bug(request, err: Exception):
        log_bug(f"{request.method} {request.url.path}", err)
        return JSONResponse(error_body("internal error; the server log has the details", kind="server_error"),
                            status_code=500)


def log_bug(where: str, err: BaseException) -> None:
    print(f"tunelab: error while answering {where}:", file=sys.stderr)
    traceback.print_exception(err, file=sys.stderr)
