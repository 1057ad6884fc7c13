"""Domain errors of the storage library.

The gateway maps these to protocol errors (S3 XML, EIO); the library never speaks HTTP.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error the library raises on purpose."""


class ConfigError(StorageError):
    """The configuration is invalid; the message is one line an operator can act on."""


class NotFound(StorageError):
    """A bucket, object, version or record does not exist."""


class BucketNotFound(NotFound):
    def __init__(self, bucket: str) -> None:
        super().__init__(f"bucket {bucket!r} does not exist")
        self.bucket = bucket


class ObjectNotFound(NotFound):
    def __init__(self, bucket: str, key: str, version_id: str | None = None) -> None:
        super().__init__(f"object {key!r} not found in bucket {bucket!r}")
        self.bucket = bucket
        self.key = key
        self.version_id = version_id


class Conflict(StorageError):
    """A compare-and-swap lost or a precondition on existing state failed."""


class StaleRecord(Conflict):
    """A record a transaction depended on changed meanwhile: re-read and retry."""


class BucketChanged(StaleRecord):
    """A commit decided on a cached bucket record found the record changed: the request
    must run again on the current one (authorization, defaults), not just the commit."""


class BucketExists(Conflict):
    def __init__(self, bucket: str, owned_by_caller: bool) -> None:
        super().__init__(f"bucket {bucket!r} already exists")
        self.bucket = bucket
        self.owned_by_caller = owned_by_caller


class BucketNotEmpty(Conflict):
    def __init__(self, bucket: str) -> None:
        super().__init__(f"bucket {bucket!r} is not empty")
        self.bucket = bucket


class BucketBusy(Conflict):
    """The bucket is being deleted: a write is refused until that ends (S3 OperationAborted)."""

    def __init__(self, bucket: str) -> None:
        super().__init__(f"bucket {bucket!r} is being deleted")
        self.bucket = bucket


class AccessDenied(StorageError):
    """The caller's tenant may not touch this resource."""


NODE_DISK_FULL = "no space left on the node's disk"  # a node's word for ENOSPC (its 507)


class QuorumNotReached(StorageError):
    """Too few shards could be written or read; carries every cause for the log.

    `full`: a write refused because the nodes' disks are full (S3 "storage full", not "too
    few nodes reachable"); the writer decides it by `storage.fullness.refused_for_space`,
    from what the nodes say of their disks, never from the causes' text."""

    def __init__(self, needed: int, succeeded: int, total: int, causes: list[str],
                 full: bool = False) -> None:
        super().__init__(
            f"quorum not reached: needed {needed}, succeeded {succeeded} of {total}: "
            + "; ".join(causes[:6])
        )
        self.needed = needed
        self.succeeded = succeeded
        self.total = total
        self.causes = causes
        self.full = full


class Overloaded(StorageError):
    """The request waited too long for a shared resource (upload memory); retry later."""


class StorageFull(StorageError):
    """A disk a write needs (the metadata store's) is full: the write is refused whole and
    succeeds again once space is freed, with no restart (S3 503 ServiceUnavailable)."""


class WriteExpired(StorageError):
    """A write ran longer than the orphan grace before its commit: its first shards may
    have been swept, so it is not committed (S3 RequestTimeout; the client retries)."""


class NodeRemoved(StorageError):
    """A node a write's stripe was written to left the cluster map (`tessera node remove`)
    before the write's commit: the write is not committed, so no version names a removed
    node (S3 503 ServiceUnavailable; the client retries and the retry places anew)."""


class DataUnavailable(StorageError):
    """Fewer than k intact shards of a segment can be read: the data cannot be rebuilt now."""


class IntegrityError(StorageError):
    """A checksum or authentication tag did not match."""


class ShardCorrupt(IntegrityError):
    """A shard file fails its checks. `file` is the (st_dev, st_ino) of the file that was read
    when the reader knows it (and the offset, for a packed shard: `nodes.shardfile.
    file_identity`), so quarantine moves that shard and not a copy put there since."""

    def __init__(self, shard_id: str, detail: str,
                 file: tuple[int, ...] | None = None) -> None:
        super().__init__(f"shard {shard_id} corrupt: {detail}")
        self.shard_id = shard_id
        self.file = file


class KeyUnavailable(StorageError):
    """The key needed to decrypt is gone (tenant shredded) or cannot be unwrapped."""


class TenantDeleting(KeyUnavailable):
    """A `tessera tenant delete` began (the tenant record is "deleting",
    storage/tenant_delete.py): nothing new is made for the tenant and its writes are refused
    (it reads) until the delete is run again to finish."""


class TenantNotEmpty(Conflict):
    """A tenant delete found buckets or volumes the tenant still owns."""


class KeyCheckUnavailable(StorageError):
    """A rebuild's segment read from only k sources needs the key's check, and looking the
    key up failed (metadata store or KMS): the stripe is deferred, never rebuilt unchecked."""


class TenantShredding(StorageError):
    """The tenant is being shredded (its lock scan runs): writes to its buckets are refused
    until the shred destroys its keys or, finding locked versions, gives up."""


class InvalidInput(StorageError):
    """A caller-supplied value is malformed (bad name, size, range)."""


class InvalidRange(InvalidInput):
    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for object of {size} bytes")
        self.size = size
