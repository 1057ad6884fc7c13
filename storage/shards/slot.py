"""A whole shard file laid out with room around it for the request that carries it.

A one-segment stripe's shards are coded into one buffer (`StripeCodec.encode_slots`); each
shard file there has `room` free bytes before it and `TRAILER_BYTES` after it. The lean
sender writes the request's head into the room and the body MAC into the trailer's place,
and sends head + shard + trailer as one view of that buffer: one `transport.write`, no join
of the 256 KiB shard with its header, head or trailer (two copies of every shard byte
before). Same bytes on the wire as the pieces sent apart.
"""

from __future__ import annotations

from storage.shards.auth import TRAILER_BYTES

HEAD_ROOM = 768  # bytes kept before each shard for its PUT's head (~400 used)


class ShardSlot:
    """One shard file (`body`) inside `view`, with `room` bytes before it and
    `TRAILER_BYTES` after it that the request's head and trailer may be written into."""

    __slots__ = ("room", "view")

    def __init__(self, view: memoryview, room: int) -> None:
        if len(view) < room + TRAILER_BYTES:
            raise ValueError("slot smaller than its room")
        self.view, self.room = view, room

    @property
    def body(self) -> memoryview:
        """The shard file (header and frames)."""
        return self.view[self.room:len(self.view) - TRAILER_BYTES]

    def request(self, head: bytes, trailer: bytes) -> memoryview | None:
        """`head` + body + `trailer` as one view of the buffer, both written into their
        places around the body; None when `head` does not fit the room (send the pieces)."""
        if len(head) > self.room or len(trailer) != TRAILER_BYTES:
            return None
        start = self.room - len(head)
        end = len(self.view)
        self.view[start:self.room] = head
        self.view[end - TRAILER_BYTES:end] = trailer
        return self.view[start:end]
