"""Block volumes on this host: the FUSE driver, its write-back cache and mount handling."""

import os

# mfusepy loads libfuse 2 when both are installed (Debian's s3backer pulls it in); libfuse 2
# has no kernel write-back cache, so every 4 KiB write would reach the daemon on its own.
os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
