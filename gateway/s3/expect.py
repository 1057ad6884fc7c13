"""`Expect: 100-continue`: when the gateway asks for a request's body.

The interim `100 Continue` is sent once a request has passed every check its head allows
(aiohttp's own would go out before any: `S3Server.expect` turns it off), so a client that
waits for it sends no body that will be refused. For most operations that point is right
after authorization. PutObject and UploadPart check more from their heads (the declared
size against the limit, EntityTooLarge; UploadPart's upload id, NoSuchUpload; conditions,
checksum and lock headers): for them the `100 Continue` goes out when the handler first
reads the body (`gateway.s3.body.RequestBody`), after those checks, as AWS refuses such
requests without reading the body (its 100-continue guide: the request is rejected "based
on the headers" before the body is sent).
"""

from __future__ import annotations

from aiohttp import web

from gateway.s3.request_keys import CONTINUED

# Operations whose handler sends the 100 Continue as it starts reading the body.
AT_BODY_READ_OPS = frozenset({"PutObject", "UploadPart"})


async def send_continue(request: web.BaseRequest) -> None:
    """`100 Continue`, once, if the client asked for it (a request may run twice)."""
    if (request.headers.get("Expect", "").lower() == "100-continue"
            and request.version >= (1, 1) and request.writer is not None
            and not request.get(CONTINUED)):
        request[CONTINUED] = True
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
