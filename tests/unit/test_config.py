"""Configuration: what a valid cluster looks like, and every refusal as one plain line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storage.config import (
    MiB,
    NodeSpec,
    Profile,
    config_from_mapping,
    load_config,
    validate_layout,
)
from storage.errors import ConfigError


def nodes(zones: int, per_zone: int, role: str = "standard") -> list[dict[str, Any]]:
    out = []
    for z in range(1, zones + 1):
        for i in range(1, per_zone + 1):
            out.append({"id": f"{role[0]}{z}{i}", "zone": f"az{z}",
                        "address": f"127.0.{z}.{i}:7000", "role": role})
    return out


def raw(k: int = 4, m: int = 2, zones: int = 3, per_zone: int = 3,
        **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "cluster": {"default_profile": "standard", "segment_size": MiB},
        "profiles": {"standard": {"k": k, "m": m}},
        "nodes": nodes(zones, per_zone),
    }
    for section, value in extra.items():
        if isinstance(value, dict) and isinstance(r.get(section), dict):
            r[section] = {**r[section], **value}
        else:
            r[section] = value
    return r


def refused(r: dict[str, Any], match: str) -> str:
    with pytest.raises(ConfigError, match=match) as exc:
        config_from_mapping(r, Path("/tmp/tessera-test"))
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


# -- accepted ----------------------------------------------------------------------------------

def test_default_cluster_is_accepted() -> None:
    cfg = config_from_mapping(raw(), Path("/tmp/tessera-test"))
    assert cfg.profile().k == 4 and cfg.profile().m == 2
    assert cfg.zones == ("az1", "az2", "az3")
    assert cfg.write_quorum(cfg.profile()) == 5
    assert cfg.segment_size == MiB
    assert cfg.data_dir == Path("/tmp/tessera-test").resolve()


@pytest.mark.parametrize(("k", "m", "zones", "per_zone"), [
    (4, 2, 3, 2),  # exactly 2 per zone: capacity 6
    (2, 1, 3, 1),  # one node per zone
    (4, 2, 3, 3),
    (6, 3, 3, 3),
    (8, 4, 3, 4),
    (3, 2, 4, 2),
])
def test_zone_safe_layouts_are_accepted(k: int, m: int, zones: int, per_zone: int) -> None:
    cfg = config_from_mapping(raw(k, m, zones, per_zone), Path("."))
    assert cfg.profile().width == k + m


@pytest.mark.parametrize("size", [64 * 1024, MiB, 4 * MiB])
def test_segment_size_bounds_accepted(size: int) -> None:
    cfg = config_from_mapping(raw(cluster={"segment_size": size}), Path("."))
    assert cfg.segment_size == size


# -- refused: durability -----------------------------------------------------------------------

@pytest.mark.parametrize(("k", "m", "zones", "per_zone"), [
    (4, 2, 2, 3),  # 6 nodes, but two zones of <= 2 shards hold only 4
    (4, 2, 2, 4),  # 8 nodes, still only 4 zone-safe slots
    (4, 2, 1, 9),  # one zone: any zone loss loses everything
    (6, 3, 2, 6),  # 12 nodes, 2 zones * 3 = 6 < 9
    (2, 1, 2, 5),  # 2 zones * 1 = 2 < 3
])
def test_more_than_m_shards_forced_into_a_zone_is_refused(k: int, m: int, zones: int,
                                                           per_zone: int) -> None:
    msg = refused(raw(k, m, zones, per_zone), "cannot survive the loss of a zone")
    assert f"{k}+{m}" in msg


@pytest.mark.parametrize(("k", "m", "zones", "per_zone"), [(4, 2, 1, 5), (4, 2, 5, 1),
                                                           (8, 4, 3, 3)])
def test_too_few_nodes_is_refused(k: int, m: int, zones: int, per_zone: int) -> None:
    msg = refused(raw(k, m, zones, per_zone), "needs")
    assert str(k + m) in msg


def test_nodes_of_another_role_do_not_count() -> None:
    r = raw(zones=3, per_zone=1)
    r["nodes"] += nodes(3, 3, role="archive")
    refused(r, "needs 6 standard nodes")


def test_storage_class_profiles_are_validated() -> None:
    r = raw(storage_classes={"GLACIER": "archive"})
    r["profiles"]["archive"] = {"k": 8, "m": 4, "role": "archive"}
    refused(r, "'archive'")
    r["nodes"] += nodes(3, 4, role="archive")
    cfg = config_from_mapping(r, Path("."))
    assert cfg.profile_for_class("GLACIER").k == 8
    assert cfg.profile_for_class("STANDARD").k == 4


def test_validate_layout_directly() -> None:
    specs = tuple(NodeSpec(id=f"n{i}", zone=f"az{i % 2}", address=f"h:{i}") for i in range(6))
    with pytest.raises(ConfigError, match="cannot survive"):
        validate_layout(Profile("p", 4, 2), specs)
    validate_layout(Profile("p", 2, 2), specs)


# -- refused: shape ----------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "value", "match"), [
    ("bogus", 1, "unknown key 'bogus' in \\[top level\\]"),
    ("cluster", {"segmentsize": 1}, "unknown key 'segmentsize' in \\[cluster\\]"),
    ("gateway", {"listen_addr": "x"}, "unknown key 'listen_addr' in \\[gateway\\]"),
    ("metadata", {"engine": "x"}, "unknown key 'engine' in \\[metadata\\]"),
])
def test_unknown_keys_are_refused(section: str, value: Any, match: str) -> None:
    refused(raw(**{section: value}), match)


def test_unknown_profile_and_node_keys_are_refused() -> None:
    r = raw()
    r["profiles"]["standard"]["parity"] = 2
    refused(r, "unknown key 'parity' in \\[profiles.standard\\]")
    r = raw()
    r["nodes"][0]["host"] = "x"
    refused(r, "unknown key 'host' in \\[nodes\\[0\\]\\]")


@pytest.mark.parametrize("size", [0, 4096, 64 * 1024 - 1, 4 * MiB + 1, 64 * MiB, -1])
def test_bad_segment_size_is_refused(size: int) -> None:
    refused(raw(cluster={"segment_size": size}), "segment_size")


@pytest.mark.parametrize("value", ["1MiB", "big", 1.5, [1]])
def test_non_integer_segment_size_is_refused(value: Any) -> None:
    refused(raw(cluster={"segment_size": value}), "segment_size")


@pytest.mark.parametrize(("k", "m"), [(0, 2), (4, 0), (200, 100)])
def test_bad_profile_numbers_are_refused(k: int, m: int) -> None:
    refused(raw(k=k, m=m), "profile 'standard'")


def test_non_integer_profile_numbers_are_refused() -> None:
    r = raw()
    r["profiles"]["standard"]["k"] = "four"
    refused(r, "profile 'standard'")


def test_other_shape_errors() -> None:
    r = raw()
    r["profiles"] = {}
    refused(r, "no \\[profiles")
    refused(raw(cluster={"default_profile": "fast"}), "default_profile 'fast'")
    refused(raw(storage_classes={"GLACIER": "nope"}), "unknown profile 'nope'")
    refused(raw(metadata={"backend": "redis"}), "metadata backend")
    r = raw()
    r["nodes"][1]["id"] = r["nodes"][0]["id"]
    refused(r, "unique")
    r = raw()
    del r["nodes"][0]["zone"]
    refused(r, "nodes\\[0\\] needs 'zone'")
    r = raw()
    del r["profiles"]["standard"]["m"]
    refused(r, "needs 'm'")
    r = raw()
    r["nodes"][0]["role"] = "fast"
    refused(r, "role must be one of")
    r = raw()
    r["nodes"][0]["weight"] = "heavy"
    refused(r, "weight must be a number")
    for bad in ("n" * 64, "", "-n1", "n/1", "n 1", "n\x00"):
        r = raw()  # a node id names files, labels and a 64-byte shared health slot
        r["nodes"][0]["id"] = bad
        refused(r, "nodes\\[0\\]: id .* must be 1-63")
    r = raw()
    r["nodes"][0]["id"] = "a" * 63
    config_from_mapping(r)
    refused(raw(cluster={"write_quorum_extra": -1}), "write_quorum_extra")
    refused(raw(cluster={"write_quorum_extra": "1"}), "write_quorum_extra")


# -- files -------------------------------------------------------------------------------------

def test_load_config_file(tmp_path: Path) -> None:
    lines = ['data_dir = "data"', "[profiles.standard]", "k = 2", "m = 1"]
    for z in (1, 2, 3):
        lines += ["[[nodes]]", f'id = "n{z}"', f'zone = "az{z}"', f'address = "127.0.{z}.1:1"']
    path = tmp_path / "tessera.toml"
    path.write_text("\n".join(lines) + "\n")
    cfg = load_config(path)
    assert cfg.data_dir == (tmp_path / "data").resolve()
    assert cfg.secret_path.is_relative_to(cfg.data_dir)
    assert cfg.root_key_path.is_relative_to(cfg.data_dir)


def test_load_config_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[profiles\nk = ")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("day", [0.05, 86400.5, 1e9])
def test_lifecycle_day_outside_its_range_is_refused(day: float) -> None:
    """[lifecycle] day_seconds is 0 (the archive day) or 0.1 s .. a real day."""
    refused({**raw(), "lifecycle": {"day_seconds": day}},
            r"\[lifecycle\] day_seconds must be 0 \(the \[archive\] day\) or between 0.1 and "
            r"86400 s")
    for ok in (0, 0.1, 2, 86400):
        assert config_from_mapping({**raw(), "lifecycle": {"day_seconds": ok}}
                                   ).lifecycle.day_seconds == ok


@pytest.mark.parametrize(("section", "key", "value"), [
    ("repair", "busy_lag_ms", float("inf")), ("repair", "busy_lag_ms", float("nan")),
    ("repair", "busy_lag_ms", 10_001.0), ("rebalance", "busy_lag_ms", 1e9),
    ("repair", "rate_bytes_s", float("nan")), ("repair", "busy_rate_bytes_s", float("inf")),
    ("scrub", "rate_bytes_s", float("nan")), ("repair", "rate_bytes_s", 10**400)])
def test_settings_refuse_nan_inf_and_values_past_their_ceiling(
        section: str, key: str, value: float) -> None:
    """NaN passed the `v < least` check (and meant 'unlimited' or 'adaptation off'
    silently), inf made the busy rate never back off."""
    refused({**raw(), section: {key: value}}, rf"\[{section}\] {key} must be a number >= ")
    assert getattr(config_from_mapping({**raw(), section: {key: 50.0}}), section) is not None


@pytest.mark.parametrize("value", [0, 100, 8191, "16384", 16384.0, True])
def test_max_header_bytes_below_aws_cap_or_not_whole_is_refused(value: Any) -> None:
    """A cap under 8 KiB (AWS's own) was taken and then refused every ordinary request."""
    refused(raw(gateway={"max_header_bytes": value}),
            r"\[gateway\] max_header_bytes must be a whole number >= 8192")
    for ok in (8192, 16384, 65536):
        assert config_from_mapping(raw(gateway={"max_header_bytes": ok})
                                   ).gateway.max_header_bytes == ok


def test_admin_hosts_is_a_list_of_names() -> None:
    """[gateway] admin_hosts (the admin listener's Host allowlist, gateway/admin/hosts.py)."""
    cfg = config_from_mapping(raw(gateway={"admin_hosts": ["a.example"]}), Path("/tmp/t"))
    assert cfg.gateway.admin_hosts == ("a.example",)
    assert config_from_mapping(raw(), Path("/tmp/t")).gateway.admin_hosts == ()
    for bad in ("a.example", [1], [""], ["http://a.example/"]):
        refused(raw(gateway={"admin_hosts": bad}), "admin_hosts")
    # entries that can never match a Host loaded, and their name was then refused 421
    for bad in (["*.example.com"], ["admin example"], [" a.example"], ["a.*"], ["**"],
                ["[fe80::1%25x]"]):
        refused(raw(gateway={"admin_hosts": bad}), "admin_hosts")
    ok = ["*", "admin.example.com:443", "[::1]:9001", "10.0.0.5", "gw_1"]
    assert config_from_mapping(raw(gateway={"admin_hosts": ok}),
                               Path("/tmp/t")).gateway.admin_hosts == tuple(ok)
