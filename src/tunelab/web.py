"""What both web servers (``serve`` and ``app``) need against abuse: a cap on request bodies, and
JSON for every error, including the ones that should never happen.

    app.add_middleware(BodyLimit, limit=1_048_576)
    json_500(app)
"""

from __future__ import annotations

import json
import sys
import traceback


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """The OpenAI error shape both servers answer with."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# Bodies up to this size are read (and dropped) before the 413 goes out; larger ones are cut off.
MAX_DRAINED = 64 * 1024 * 1024


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with a 413, before reading them whole.

    A declared Content-Length over the limit is refused at once; a chunked body is counted as it
    arrives and refused when it passes the limit.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            if declared.isdigit() and int(declared) <= MAX_DRAINED:
                await self._drain(receive)
            return await self._refuse(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                from starlette.exceptions import HTTPException

                if message.get("more_body"):
                    await self._drain(receive)
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, counted, send)

    @staticmethod
    async def _drain(receive) -> None:
        """Read the rest of the body and drop it: a client still sending when the answer comes and the
        connection closes would see a reset instead of the 413."""
        seen = 0
        while seen <= MAX_DRAINED:
            message = await receive()
            seen += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body"):
                return

    def _message(self) -> str:
        return f"request body larger than this server's limit of {self.limit:,} bytes"

    async def _refuse(self, send) -> None:
        body = json.dumps(error_body(self._message(), code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def json_500(app) -> None:
    """A bug still answers in JSON (and prints its traceback on the server), never an HTML page."""
    from fastapi.responses import JSONResponse

    @app.exception_handler(Exception)
    async def _bug(request, err: Exception):
        print(f"tunelab: error while answering {request.method} {request.url.path}:", file=sys.stderr)
        traceback.print_exception(err, file=sys.stderr)
        return JSONResponse(error_body("internal error; the server log has the details", kind="server_error"),
                            status_code=500)
