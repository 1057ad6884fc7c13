"""Bringing etcd back from its NOSPACE alarm (`tessera metadata recover-space`).

Past --quota-backend-bytes etcd raises a cluster-wide NOSPACE alarm and refuses every write
(StorageFull, a 503 to S3 clients) until someone, after freeing keyspace (deleting objects or
buckets: deletes are allowed), follows etcd's documented procedure: compact the history up to
the current revision, defragment every member (which returns the freed pages and shrinks the
database file), then disarm the alarm. Nothing does it by itself: freeing space is not enough.

It is an operator's command, not something a gateway does on its own: defragmenting blocks a
member's reads and writes while it runs, and disarming while the database is still over the
quota only raises the alarm again at the next write. The command says, member by member,
what the database took before and after, so the operator sees whether enough was freed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.metadata.etcd import EtcdStore

NOSPACE = "NOSPACE"


@dataclass
class MemberSpace:
    endpoint: str
    before: int  # bytes of the database file (dbSize) before the defragmentation
    after: int
    in_use: int  # bytes holding live keys after it (dbSizeInUse)


@dataclass
class SpaceRecovery:
    disarmed: list[str] = field(default_factory=list)  # member ids whose NOSPACE alarm went
    members: list[MemberSpace] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What was done, for the operator."""
        out = [f"{m.endpoint}: database {m.before} -> {m.after} bytes ({m.in_use} in use)"
               for m in self.members]
        out.append(f"NOSPACE alarm disarmed on {len(self.disarmed)} member(s)"
                   if self.disarmed else "no NOSPACE alarm was raised")
        return out


async def alarms(store: EtcdStore) -> list[dict[str, str]]:
    """The cluster's active alarms: [{"memberID": ..., "alarm": "NOSPACE"}, ...]."""
    data = await store.cluster_call("/maintenance/alarm", {"action": "GET"})
    return [a for a in data.get("alarms") or [] if a.get("alarm")]


async def recover_space(store: EtcdStore) -> SpaceRecovery:
    """Compact, defragment every member, disarm NOSPACE: etcd's procedure, in its order."""
    done = SpaceRecovery()
    raised = [a for a in await alarms(store) if a["alarm"] == NOSPACE]
    await store.scrub()  # compaction to the current revision (allowed under the alarm)
    for ep in store.endpoints:
        before = await store.member_call(ep, "/maintenance/status", {})
        await store.member_call(ep, "/maintenance/defragment", {})
        after = await store.member_call(ep, "/maintenance/status", {})
        done.members.append(MemberSpace(ep, int(before.get("dbSize", 0)),
                                        int(after.get("dbSize", 0)),
                                        int(after.get("dbSizeInUse", 0))))
    for a in raised:
        await store.cluster_call("/maintenance/alarm", {"action": "DEACTIVATE",
                                                        "alarm": NOSPACE,
                                                        "memberID": a.get("memberID", "0")})
        done.disarmed.append(str(a.get("memberID", "0")))
    return done
