"""The block driver binds libfuse 3 even where libfuse 2 is installed too (s3backer needs it):
libfuse 2 has no kernel write-back cache, and every small write would reach the daemon."""

import gateway.block.fuse  # noqa: F401 - chooses the library before mfusepy loads one


def test_driver_uses_libfuse3() -> None:
    import mfusepy

    assert mfusepy.fuse_version_major == 3
