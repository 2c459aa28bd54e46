"""The contract is in the repository and the README's claims match it and the code: the
README links ``docs/contract.md``, every setting is documented, every key ``/stats`` and
every family ``/metrics`` produce is named in the contract."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families
from sanic_testing.testing import SanicTestClient

from service.factory import create_app
from service.settings import load_settings, model
from tests.support import REPO, URL_VARS, UpstreamServer

CONTRACT = REPO / "docs" / "contract.md"
README = REPO / "README.md"


def test_readme_links_the_contract_in_the_repository() -> None:
    readme = README.read_text()
    assert "](docs/contract.md)" in readme
    assert "shared/contract.md" not in readme  # the old path, outside the repository
    assert CONTRACT.exists()


def test_every_server_setting_is_in_the_readme() -> None:
    readme = README.read_text()
    for variable in model.VARIABLES:
        if variable.section not in model.PER_UPSTREAM:
            assert f"`{variable.name}`" in readme, variable.name


def test_every_stats_key_and_metric_family_is_in_the_contract(
    upstreams: dict[str, UpstreamServer],
) -> None:
    env = {URL_VARS[name]: server.url for name, server in upstreams.items()}
    client = SanicTestClient(create_app(load_settings(env=env), name="docs-test"), port=None)
    _, stats = client.get("/stats")
    contract = CONTRACT.read_text()
    for key in stats.json["load-balancer"]:
        assert f"`{key}`" in contract, key
    _, metrics = client.get("/metrics")
    for family in text_string_to_metric_families(metrics.text):
        assert re.search(rf"`{family.name}(_total)?`", contract), family.name
