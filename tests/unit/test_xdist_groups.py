"""Under pytest-xdist (`-n 2 --dist loadgroup`, as `CI_WORKERS=2 .ci/run` runs the suite),
each module's tests run on one worker, in order, and the block-volume modules share one
worker: a module's tests may depend on each other and on its module-scoped cluster, and the
block-volume modules compare machine-wide loop devices and mounts."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

pytest.importorskip("xdist")

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]

RECORD = '''
import os
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_one(i):
    with open({out!r}, "a") as f:
        f.write(f"{{__name__}} {{os.environ['PYTEST_XDIST_WORKER']}} {{i}} "
                f"{{os.environ.get('TESSERA_FREE_PORTS')}}\\n")
'''


def test_each_module_on_one_worker_and_the_volume_modules_together(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    out = pytester.path / "ran.txt"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(  # the repo, for tests.xdist_groups
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    monkeypatch.delenv("TESSERA_FREE_PORTS", raising=False)
    pytester.makeconftest("from tests.xdist_groups import pytest_collection_modifyitems, "
                          "pytest_configure  # noqa")
    modules = ["test_a", "test_b", "test_c", "test_d", "test_volumes", "test_volume_zone"]
    for name in modules:
        pytester.makepyfile(**{name: RECORD.format(n=8, out=str(out))})
    # one test, but named in xdist_groups.FIRST: handed out before the 8-test modules
    pytester.makepyfile(test_crash_points=RECORD.format(n=1, out=str(out)))
    r = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "--dist", "loadgroup", "-q")
    r.assert_outcomes(passed=8 * len(modules) + 1)
    workers: dict[str, set[str]] = collections.defaultdict(set)
    order: dict[str, list[int]] = collections.defaultdict(list)
    ports: dict[str, set[str]] = collections.defaultdict(set)
    first: dict[str, str] = {}  # worker: the module it ran first
    for line in out.read_text().splitlines():
        module, worker, i, span = line.split()
        workers[module].add(worker)
        order[module].append(int(i))
        ports[worker].add(span)
        first.setdefault(worker, module)
    assert all(len(w) == 1 for w in workers.values()), dict(workers)
    assert workers["test_volumes"] == workers["test_volume_zone"]
    assert all(seq == list(range(len(seq))) for seq in order.values()), dict(order)
    assert order["test_crash_points"] == [0]
    # the block-volume group and then test_crash_points went out first, one to each worker
    assert sorted(first.values()) in (["test_crash_points", "test_volume_zone"],
                                      ["test_crash_points", "test_volumes"]), first
    assert len(set().union(*workers.values())) == 2  # both workers were used
    # each worker picks free ports in a slice of its own, none overlapping
    assert all(len(p) == 1 for p in ports.values()), dict(ports)
    spans = sorted(tuple(map(int, p.pop().split("-"))) for p in ports.values())
    assert len(spans) == 2 and spans[0][0] < spans[0][1] <= spans[1][0] < spans[1][1], spans
