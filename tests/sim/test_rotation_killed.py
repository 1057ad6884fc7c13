"""atkcrash18: a key rotation killed after its transaction still ends with every key of the
tenant under the new KEK version.

`keys_rotation.rotate` commits the new KEK version with the rewrap marker, then rewraps the
tenant's named KMS keys itself; the `Rewrapper` worker rewraps the data keys and clears the
marker. Killed between the two, the KMS keys stayed wrapped under the old KEK version for
good while the worker, finding no stale data key, cleared the marker: the rotation looked
finished. The kill is modelled at the metadata store: the rotation's transaction applies,
then the process does nothing more."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import keys_rotation as kr
from storage.keyspace import kms_key_key, rewrap_key
from storage.kms import KmsKey, KmsService
from storage.metadata import Txn
from storage.workers import WorkerState
from storage.workers.keys import Rewrapper
from tests.sim.test_sim_repair import SEGMENT, Sim


class Killed(BaseException):
    """The process died here (SIGKILL)."""


async def test_a_rotation_killed_after_its_commit_rewraps_the_kms_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Sim(tmp_path, 5)
    await s.open(tmp_path)
    try:
        await s.put("o", SEGMENT + 3)
        k = await KmsService(s.meta, s.tenants, "us-east-1").create("t", ["orders"])
        real = s.meta.txn

        async def txn(t: Txn) -> bool:
            done = await real(t)
            if done and rewrap_key("t") in t.puts:
                monkeypatch.setattr(s.meta, "txn", real)
                raise Killed
            return done

        monkeypatch.setattr(s.meta, "txn", txn)
        with pytest.raises(Killed):
            await kr.rotate(s.meta, s.tenants, "t")
        version = (await s.tenants.get("t")).current_kek
        assert version == 2
        r = Rewrapper(s.meta, s.tenants)  # the restarted gateway's worker
        for _ in range(50):
            if await r.step() is WorkerState.IDLE:
                break
        else:
            raise AssertionError("the rewrap worker never went idle")
        assert await s.meta.get(rewrap_key("t")) is None
        assert (await s.objects.head(s.bucket, "o")).kek_version == version
        item = await s.meta.get(kms_key_key("t", k.key_id))
        assert item is not None and KmsKey.decode(item.value).kek_version == version
    finally:
        await s.close()
