"""Outside-attacker checks on the admin listener: the console login and the admin API refuse
what no UTF-8 can hold with a 400 (they answered 500), and the runtime-settings route takes
no tenant key and no nonsense value."""

from __future__ import annotations

import uuid

import pytest
import requests

from ops.admincli import CliError, admin_request
from tests.integration.cluster import LocalCluster


def test_console_login_with_an_unpaired_surrogate_is_a_400(cluster: LocalCluster) -> None:
    url = f"http://127.0.0.1:{cluster.admin_port}/console/api/login"
    for body in ('{"access_key": "a", "secret_key": "\\ud800"}',
                 '{"access_key": "\\udfff", "secret_key": "x"}'):
        r = requests.post(url, data=body, headers={"Content-Type": "application/json"},
                          timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "MalformedJSON", r.text


def test_admin_body_with_an_unpaired_surrogate_is_a_400(cluster: LocalCluster) -> None:
    with pytest.raises(CliError, match="MalformedJSON"):
        admin_request("POST", "/keys", {"tenant": "\ud800"}, env=cluster.env)


def test_config_route_refuses_tenant_keys_and_bad_values(cluster: LocalCluster) -> None:
    name = f"atk-{uuid.uuid4().hex[:6]}"
    admin_request("POST", "/tenants", {"name": name}, env=cluster.env)
    cred = admin_request("POST", "/keys", {"tenant": name}, env=cluster.env)
    tenant_env = {**cluster.env, "TESSERA_ADMIN_ACCESS_KEY": cred["access_key_id"],
                  "TESSERA_ADMIN_SECRET_KEY": cred["secret_access_key"]}
    with pytest.raises(CliError, match="AccessDenied"):
        admin_request("PUT", "/config/lifecycle.day_seconds", {"value": 5}, env=tenant_env)
    for value in (-1, 0, "5", True, None, 1e-9):
        with pytest.raises(CliError, match="InvalidArgument"):
            admin_request("PUT", "/config/lifecycle.day_seconds", {"value": value},
                          env=cluster.env)
    with pytest.raises(CliError):
        admin_request("PUT", "/config/no.such.setting", {"value": 5}, env=cluster.env)
    assert admin_request("GET", "/config", env=cluster.env)
