"""`ops.localports.free_port`: a port free now, below the ephemeral range, and inside
$TESSERA_FREE_PORTS when that is set (how pytest-xdist workers keep apart)."""

from __future__ import annotations

import socket

import pytest

from ops.localports import FREE_PORTS_ENV, _ephemeral_low, free_port, free_port_range


def test_default_range_ends_below_the_ephemeral_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FREE_PORTS_ENV, raising=False)
    low, high = free_port_range()
    assert low == 10000 and high == _ephemeral_low() - 16
    assert all(low <= free_port() < high for _ in range(20))


def test_the_environment_narrows_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FREE_PORTS_ENV, "20000-20040")
    assert free_port_range() == (20000, 20040)
    picked = {free_port() for _ in range(200)}
    assert picked <= set(range(20000, 20040)) and len(picked) > 1


def test_a_port_handed_out_lately_is_not_handed_out_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ports picked one after another before any is bound (a cluster's S3, admin and node
    ports) are distinct: in a range of 40, 20 picks in a row never repeat."""
    monkeypatch.setenv(FREE_PORTS_ENV, "20000-20040")
    for _ in range(50):
        picks = [free_port() for _ in range(20)]
        assert len(set(picks)) == len(picks), picks


def test_a_taken_port_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        monkeypatch.setenv(FREE_PORTS_ENV, f"{port}-{port + 1}")
        with pytest.raises(RuntimeError, match="no free port"):
            free_port()


@pytest.mark.parametrize("spec", ["20000", "a-b", "30000-20000", "80-90", "60000-70000"])
def test_a_bad_range_is_refused(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FREE_PORTS_ENV, spec)
    with pytest.raises(RuntimeError, match=FREE_PORTS_ENV):
        free_port_range()
