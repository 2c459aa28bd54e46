"""The contract is in the repository and the documentation's claims match it and the code:
the README links ``docs/contract.md``, every setting is in the configuration reference, every
key ``/stats`` and every family ``/metrics`` produce is named in the contract, and every
relative link of the README and ``docs/`` leads to a file and a heading that exist (pages
move; a link that breaks silently sends a reader nowhere)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sanic_testing.testing import SanicTestClient

from service.factory import create_app
from service.settings import load_settings, model
from tests.support import REPO, URL_VARS, UpstreamServer

CONTRACT = REPO / "docs" / "contract.md"
README = REPO / "README.md"
CONFIGURATION = REPO / "docs" / "configuration.md"


def test_readme_links_the_contract_in_the_repository() -> None:
    readme = README.read_text()
    assert "](docs/contract.md)" in readme
    assert "shared/contract.md" not in readme  # the old path, outside the repository
    assert CONTRACT.exists()


def test_every_server_setting_is_in_the_configuration_reference() -> None:
    reference = CONFIGURATION.read_text()
    for variable in model.VARIABLES:
        if variable.section not in model.PER_UPSTREAM:
            assert f"`{variable.name}`" in reference, variable.name


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


FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The text outside fenced blocks (a ``# comment`` there is no heading)."""
    return FENCE.sub("", text)


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lowercase, punctuation dropped, spaces to
    ``-``, a repeated heading suffixed ``-1``, ``-2``..."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in HEADING.findall(_prose(text)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _broken_links(page: Path) -> list[str]:
    """Every relative link of ``page`` whose file, or whose anchor in that file, is missing."""
    broken = []
    for target in LINK.findall(CODE_SPAN.sub("", _prose(page.read_text()))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{page.name}: {target}: no such file")
        elif anchor and anchor not in _anchors(linked.read_text()):
            broken.append(f"{page.name}: {target}: no heading #{anchor}")
    return broken


def test_every_relative_link_and_anchor_resolves() -> None:
    pages = [README, *sorted((REPO / "docs").glob("*.md"))]
    assert len(pages) > 2
    broken = [line for page in pages for line in _broken_links(page)]
    assert not broken, "\n".join(broken)


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text(
        "# A page\n\n## What `/stats` adds\n\n```\n# not a heading\n```\n"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#what-stats-adds) [ok](#here) [web](https://example.org/x#y)\n"
        "`[code](nowhere.md)`\n\n## Here\n\n"
        "[gone](missing.md) [no anchor](other.md#not-a-heading) [self](#nowhere)\n"
    )
    assert _broken_links(page) == [
        "page.md: missing.md: no such file",
        "page.md: other.md#not-a-heading: no heading #not-a-heading",
        "page.md: #nowhere: no heading #nowhere",
    ]
