"""``python -m service`` explains itself: ``--help`` from the settings model, ``--check``
like nginx's ``-t``, and one line with exit 2 for an unresolvable LB_HOST or a taken port."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys

import pytest

from service.cli import SECTION_MODELS, default_of
from service.settings import model
from service.settings.loading import SECTIONS
from tests.support import REPO, clean_env, free_port


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=REPO,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_help_lists_every_setting_with_its_default_and_meaning() -> None:
    port = free_port()
    result = run("--help", LB_PORT=str(port))
    assert result.returncode == 0, result.stderr
    assert not listening(port)  # nothing was started
    lines = result.stdout.splitlines()
    for variable in model.VARIABLES:
        name = variable.name.replace("{PREFIX}", "<PREFIX>")
        (line,) = [l for l in lines if l.split()[:1] == [name]]
        default = default_of(variable.section, variable.key)
        if isinstance(default, bool):
            shown = "true" if default else "false"
        else:
            shown = "unset" if default in ("", None) else str(default)
            if isinstance(default, tuple):  # a list setting: its items, comma-separated
                shown = ",".join(str(item) for item in default) or "unset"
        assert line.split()[1] == shown, line
        assert variable.meaning in line
    assert any(l.split()[:1] == ["LB_CONFIG"] for l in lines)
    assert any(l.split()[:1] == ["API_GATEWAY_URL"] for l in lines)  # the TOML's upstreams


def test_help_works_with_a_broken_environment() -> None:
    result = run("--help", LB_READ_TIMEOUT="never")
    assert result.returncode == 0 and "LB_READ_TIMEOUT" in result.stdout


def test_every_scalar_setting_has_a_variable() -> None:
    """--help and the loader read VARIABLES: a field without a row would be unreachable."""
    covered = {(v.section, v.key) for v in model.VARIABLES}
    not_scalar = {"upstreams", "routes", "limits", *SECTIONS}  # TOML tables
    not_scalar.add("source")  # not a setting: the text the settings were loaded from
    from_toml = {"name", "url_env", "targets", "stats_key", "passive", "active"}
    for section, part in SECTION_MODELS.items():
        for item in dataclasses.fields(part):
            if item.name in not_scalar or (section == "upstream" and item.name in from_toml):
                continue
            assert (section, item.name) in covered, (section, item.name)


def test_check_prints_the_effective_configuration_and_starts_nothing() -> None:
    port = free_port()
    result = run(
        "--check",
        LB_PORT=str(port),
        API_GATEWAY_URL="http://127.0.0.1:9001;weight=3, http://127.0.0.1:9002",
        API_GATEWAY_BALANCE="round_robin",
        LB_ACCESS_LOG="off",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("configuration OK")
    assert f":{port}," in out and "access log off" in out
    assert "/api" in out and "-> api-gateway" in out and "-> dashboard-ui" in out
    assert "api-gateway: round_robin" in out
    assert "http://127.0.0.1:9001  weight 3" in out and "http://127.0.0.1:9002  weight 1" in out
    assert not listening(port)


@pytest.mark.parametrize(
    ("var", "value"),
    [("LB_READ_TIMEOUT", "-1"), ("LB_LOG_FORMAT", "xml"), ("API_GATEWAY_URL", "ftp://x")],
)
def test_check_refuses_a_bad_setting_in_one_line(var: str, value: str) -> None:
    result = run("--check", **{var: value})
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert var in line and result.stdout == ""


@pytest.mark.parametrize("args", [(), ("--check",)])
def test_an_unresolvable_host_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    result = run(*args, LB_HOST="no-such-host.invalid", LB_PORT=str(free_port()))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "LB_HOST='no-such-host.invalid' does not resolve" in line


def test_a_taken_port_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(LB_HOST="127.0.0.1", LB_PORT=str(port))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "already in use" in line


def test_an_unknown_argument_is_refused() -> None:
    result = run("--serve-forever")
    assert result.returncode == 2 and "--help" in result.stderr
