"""`nodes.forker`'s life with `tessera up` (review8b 3-7): each forked node its own request
ids, the forker's death noticed and nodes' after it, the forker dies with `tessera up` and
survives a closed stdout, a failure before any fork names the forker's log, a SIGTERM sent
before a node restores its handlers is delivered, a reaped node's pid is never signalled."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ops.localcluster import _start_nodes, _stop_all
from ops.nodeforks import ForkedProc
from storage.pids import pid_running as _alive
from tests.contract.test_node_forker import _config, _kill_all

ROOT = Path(__file__).resolve().parents[2]
SAFETY_S = 60  # a bound on a wait that ends on an event, never a synchronization


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _wait_gone(pid: int) -> bool:
    """Whether `pid` ended within SAFETY_S (seen through a pidfd: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], SAFETY_S)[0])
    finally:
        os.close(fd)


def _sig_mask(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1], 16)
    raise AssertionError(field)


def test_each_forked_process_draws_its_own_request_ids() -> None:
    script = textwrap.dedent("""
        import os
        from nodes.app import new_request_id
        first = new_request_id(); new_request_id()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, new_request_id().encode()); os._exit(0)
        os.waitpid(pid, 0)
        print(first, os.read(r, 200).decode(), new_request_id())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=_env(), check=True).stdout.split()
    first, child, after = out
    assert first.endswith("-1") and after == first[:-1] + "3"  # the parent's go on
    assert child.endswith("-1") and child.rsplit("-", 1)[0] != first.rsplit("-", 1)[0]


def test_tessera_up_notices_the_forkers_death_and_a_node_death_after_it(
        tmp_path: Path) -> None:
    config = _config(tmp_path)

    async def main() -> None:
        children = await _start_nodes(config, tmp_path / "logs", ["n1", "n2"])
        try:
            n2, forker = children[1], children[-1]
            assert forker.name == "nodes-forker"
            os.kill(forker.proc.pid, signal.SIGKILL)  # while both nodes hold their pipe
            assert await asyncio.wait_for(forker.proc.wait(), SAFETY_S) == -signal.SIGKILL
            assert n2.proc.returncode is None
            os.kill(n2.proc.pid, signal.SIGKILL)
            assert await asyncio.wait_for(n2.proc.wait(), SAFETY_S) == -signal.SIGKILL
            assert children[0].proc.returncode is None  # n1 still up, still stoppable
        finally:
            await _stop_all(children)
        assert '"msg":"stopping"' in (tmp_path / "logs" / "n1.log").read_text()

    asyncio.run(main())


def test_the_forker_dies_with_tessera_up_and_the_nodes_stay(tmp_path: Path) -> None:
    config = _config(tmp_path)
    script = textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from ops.nodeforks import start_forker, until_ready
        async def main():
            proc, nodes = await start_forker(Path({str(config)!r}), Path({str(tmp_path / "logs")!r}), ["n1"])
            assert await until_ready(nodes["n1"], 60) == "ready"
            print(proc.pid, nodes["n1"].pid, flush=True)
            await asyncio.Event().wait()
        asyncio.run(main())
    """)
    up = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                          env=_env(), start_new_session=True)
    assert up.stdout is not None
    pids: list[int] = []
    try:
        pids = [int(w) for w in up.stdout.readline().split()]
        forker, n1 = pids
        up.kill()  # SIGKILL: tessera up stops nothing itself
        up.wait()
        assert _wait_gone(forker), "the forker outlived tessera up"
        assert _alive(n1)  # the nodes keep their previous behaviour (own sessions)
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if up.poll() is None:
            up.kill()
            up.wait()


def test_the_forker_blocks_sigterm_and_survives_its_reader_going_away(tmp_path: Path) -> None:
    config = _config(tmp_path)
    log = tmp_path / "forker.log"
    with open(log, "wb") as err:
        p = subprocess.Popen([sys.executable, "-m", "nodes.forker", "--config", str(config),
                              "--log-dir", str(tmp_path / "logs"), "n1", "n2"],
                             stdout=subprocess.PIPE, stderr=err, text=True,
                             start_new_session=True)
    assert p.stdout is not None
    pids: dict[str, int] = {}
    try:
        ready = 0
        while ready < 2 or len(pids) < 2:
            word, node, rest = p.stdout.readline().split(maxsplit=2)
            if word == "forked":
                pids[node] = int(rest)
            else:
                ready += 1
        term = 1 << (signal.SIGTERM - 1)
        assert _sig_mask(p.pid, "SigBlk") & term and not _sig_mask(p.pid, "SigIgn") & term
        assert not _sig_mask(pids["n1"], "SigBlk") & term  # unblocked in the node
        p.stdout.close()  # tessera up is gone: the forker's next line meets EPIPE
        os.kill(pids["n1"], signal.SIGKILL)
        os.kill(pids["n2"], signal.SIGTERM)
        assert p.wait(SAFETY_S) == 0, log.read_text()
        assert "Error" not in log.read_text()
    finally:
        _kill_all(p, pids)


def test_a_sigterm_sent_before_a_node_restores_its_handlers_is_delivered(
        tmp_path: Path) -> None:
    """The forker's state at fork (SIGTERM blocked), a SIGTERM arriving before the child
    has set its handlers: the child ends by it instead of serving on."""
    config = _config(tmp_path)
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from nodes.forker import _child
        signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM, signal.SIGINT}})
        os.kill(os.getpid(), signal.SIGTERM)  # pending, as one sent right after `forked`
        _child({str(config)!r}, "n1", Path({str(tmp_path / "logs")!r}))
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                         env=_env())
    try:
        out, _ = p.communicate(timeout=SAFETY_S)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == -signal.SIGTERM and "ready" not in out


def test_a_forker_that_fails_before_forking_names_its_own_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path)
    broken = tmp_path / "broken" / "aiohttp"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('aiohttp broken for the test')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(broken.parent), str(ROOT)]))
    with pytest.raises(RuntimeError) as err:
        asyncio.run(_start_nodes(config, tmp_path / "logs", ["n1", "n2"]))
    msg = str(err.value)
    assert "nodes-forker.log" in msg and "aiohttp broken for the test" in msg, msg
    assert "n1.log" not in msg and not (tmp_path / "logs" / "n1.log").exists()


def test_a_reaped_nodes_pid_is_never_signalled() -> None:
    async def main() -> None:
        node, reused = ForkedProc(), ForkedProc()
        first = subprocess.Popen(["sleep", "600"])
        other = subprocess.Popen(["sleep", "600"])
        try:
            node.started(first.pid, os.getpid())
            first.kill()
            first.wait()  # reaped, its `exited` line not read yet
            node.pid = other.pid  # the number now names another process
            with pytest.raises(ProcessLookupError):
                node.terminate()
            reused.started(other.pid, os.getpid() + 1 if os.getpid() != 1 else 2)
            with pytest.raises(ProcessLookupError):  # not the forker's child: not ours
                reused.terminate()
            assert other.poll() is None
        finally:
            for p in (first, other):
                p.kill()
                p.wait()

    asyncio.run(main())


@pytest.mark.parametrize("seen_parent", [None, 1])
def test_a_node_whose_parent_is_unknown_or_init_is_still_signalled(
        monkeypatch: pytest.MonkeyPatch, seen_parent: int | None) -> None:
    """No readable /proc (parent unknown), or the forker died between the fork and its
    `forked` line (the node is init's child now): the node is still ours to stop. Marked
    gone, every signal failed and `tessera up` waited on it for ever (review8d)."""
    from ops import nodeforks
    monkeypatch.setattr(nodeforks, "_parent_of", lambda pid: seen_parent)

    async def main() -> None:
        node = ForkedProc()
        child = subprocess.Popen(["sleep", "600"])
        try:
            node.started(child.pid, os.getpid() + 1 if os.getpid() != 1 else 2)
            node.terminate()
            assert child.wait(timeout=60) == -signal.SIGTERM
        finally:
            child.kill()
            child.wait()

    asyncio.run(main())
