"""`storage.headguard.single_content_length`: a head repeating Content-Length with one value
reaches the parser with it once (RFC 9110 section 8.6; AWS takes it; rclone < 1.59 sends it);
anything else is left as it came, for the parser to judge."""

from __future__ import annotations

from storage.headguard import single_content_length


def _run(head: bytes, rest: bytes = b"body") -> bytes:
    buf = head + b"\r\n\r\n" + rest
    return single_content_length(buf, buf.find(b"\r\n\r\n"))


def test_a_repeated_equal_value_is_kept_once() -> None:
    head = (b"PUT /b/k?X-Amz-Signature=x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
            b"content-length: 4\r\nx-amz-meta-a: b\r\nCONTENT-LENGTH:4 ")
    assert _run(head) == (b"PUT /b/k?X-Amz-Signature=x HTTP/1.1\r\nHost: h\r\n"
                          b"Content-Length: 4\r\nx-amz-meta-a: b\r\n\r\nbody")


def test_anything_else_is_left_to_the_parser() -> None:
    for head in (
        b"PUT / HTTP/1.1\r\nContent-Length: 4\r\ncontent-length: 5",  # differing: smuggling
        b"PUT / HTTP/1.1\r\nContent-Length: 4\r\ncontent-length: +4",  # not a number
        b"PUT / HTTP/1.1\r\nContent-Length: 4\r\ncontent-length: 4\r\n x",  # folded line
        b"PUT / HTTP/1.1\r\nContent-Length: 4\r\nx-content-length: 4",  # one Content-Length
        b"PUT / HTTP/1.1\r\nContent-Length: 4",
    ):
        assert _run(head) == head + b"\r\n\r\nbody", head


def test_the_bytes_after_the_head_are_untouched() -> None:
    rest = b"content-length: 4\r\n\r\nnext"
    head = b"PUT / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4"
    assert _run(head, rest) == b"PUT / HTTP/1.1\r\nContent-Length: 4\r\n\r\n" + rest
