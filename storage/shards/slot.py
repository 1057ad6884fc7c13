"""A whole shard file laid out with room around it for the request that carries it.

A one-segment stripe's shards are coded into one buffer (`StripeCodec.encode_slots`); each
shard file there has `room` free bytes before it and `TRAILER_BYTES` after it. The lean
sender writes the request's head into the room and the body MAC into the trailer's place,
and sends head + shard + trailer as one view of that buffer: one `transport.write`, no join
of the 256 KiB shard with its header, head or trailer (two copies of every shard byte
before). Same bytes on the wire as the pieces sent apart.

Only the first request is written into the buffer: a transport may still hold a view of
unsent bytes of it (Python 3.12's selector transport queues the caller's memoryview without
a copy), so a later request for the same slot (a retry, a hedge) is built in a new buffer
and never rewrites head or trailer bytes under a send that may still be reading them.
"""

from __future__ import annotations

from storage.shards.auth import TRAILER_BYTES

HEAD_ROOM = 768  # bytes kept before each shard for its PUT's head (~400 used)


class ShardSlot:
    """One shard file (`body`) inside `view`, with `room` bytes before it and
    `TRAILER_BYTES` after it that the request's head and trailer may be written into."""

    __slots__ = ("_lent", "room", "view")

    def __init__(self, view: memoryview, room: int) -> None:
        if len(view) < room + TRAILER_BYTES:
            raise ValueError("slot smaller than its room")
        self.view, self.room = view, room
        self._lent = False  # the buffer's head room and trailer were handed to a send

    @property
    def body(self) -> memoryview:
        """The shard file (header and frames)."""
        return self.view[self.room:len(self.view) - TRAILER_BYTES]

    def request(self, head: bytes, trailer: bytes) -> memoryview | None:
        """`head` + body + `trailer` as one view of the buffer, both written into their
        places around the body; None when `head` does not fit the room (send the pieces)."""
        if len(head) > self.room or len(trailer) != TRAILER_BYTES:
            return None
        if self._lent:  # an earlier send may still read the room: a copy (see above)
            return memoryview(b"".join((head, self.body, trailer)))
        self._lent = True
        start = self.room - len(head)
        end = len(self.view)
        self.view[start:self.room] = head
        self.view[end - TRAILER_BYTES:end] = trailer
        return self.view[start:end]
