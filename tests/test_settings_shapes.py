"""A TOML file whose parts have the wrong type (``upstreams = 5``, ``proxy = 5``,
``routes = [5]``, ``health = 5``, ...) is a :class:`SettingsError` naming the key, never
another exception: at start-up it is the one line that stops the process, on reload a
refused file (``service.reload``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from service.settings import SettingsError, load_settings
from tests.support import clean_env, sanic_until_exit

# A document using every shape the loader reads: scalar sections, [[upstreams]] with their
# own, passive and health keys, [[routes]], [[limits]].
BASE: dict[str, Any] = {
    "server": {"port": 7100, "access_log": False},
    "proxy": {"connect_timeout": 2.0, "keep_host": True},
    "admin": {"allow": ["127.0.0.1/32"]},
    "resolver": {"servers": ["127.0.0.1:53"]},
    "admission": {"rate_limit": "50/s"},
    "upstreams": [
        {
            "name": "api",
            "url_env": "SHAPES_API_URL",
            "url": "http://127.0.0.1:9001",
            "stats_key": "api",
            "max_fails": 2,
            "fail_statuses": [502, 503],
            "health": {"path": "/health", "interval": 1.0},
        },
        {"name": "ui", "url_env": "SHAPES_UI_URL", "url": "http://127.0.0.1:9002"},
    ],
    "routes": [
        {"prefix": "/api", "upstream": "api", "redirect_bare": True},
        {"prefix": "/", "upstream": "ui"},
    ],
    "limits": [{"name": "api", "rate": "10/s", "routes": ["api"], "methods": ["GET"]}],
}
WRONG: tuple[Any, ...] = (5, 1.5, True, "x", [5], ["x"], [[5]], {"a": 1}, [{"a": 1}], [])


def dumps(document: dict[str, Any]) -> str:
    """TOML for ``document``, each top-level key one line (tables inline)."""
    return "".join(f"{key} = {_value(value)}\n" for key, value in document.items())


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + "}"


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and index of the document, outermost first."""
    if path:
        yield path
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in items:
        yield from _paths(child, (*path, key))


def _replaced(path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(BASE))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return document


def test_the_base_document_loads() -> None:
    settings = load_settings(env={}, text=dumps(BASE))
    assert [u.name for u in settings.upstreams] == ["api", "ui"]
    assert settings.upstream("api").active is not None


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("upstreams = 5", "[[upstreams]]"),
        ("proxy = 5", "[proxy]"),
        ("routes = [5]", "[[routes]] #1"),
        ('server = "port"', "[server]"),
        ("[[proxy]]\nconnect_timeout = 1.0", "[proxy]"),
        ('[upstreams]\nname = "api"', "[[upstreams]]"),
        ("upstreams = [5]", "[[upstreams]] #1"),
        ('[[upstreams]]\nname = "a"\nurl_env = "A_URL"\nurl = "http://a"\nhealth = 5', "health"),
        ('[[upstreams]]\nname = "a"\nurl_env = "A_URL"\nurl = "http://a"\nhealth = "x"', "health"),
        ('[[upstreams]]\nname = "a"\nurl_env = "A_URL"\nurl = "http://a"\nhealth = [1]', "health"),
        ('[[upstreams]]\nname = ["a"]\nurl_env = "A_URL"\nurl = "http://a"', "name"),
        ('[[upstreams]]\nname = "a"\nurl_env = 5\nurl = "http://a"', "url_env"),
        (
            '[[upstreams]]\nname = "a"\nurl_env = "A_URL"\nurl = "http://a"\nstats_key = {}',
            "stats_key",
        ),
        ('[[routes]]\nprefix = "/"\nupstream = 5', "upstream"),
        ('[[routes]]\nprefix = "/"\nupstream = "a"\nredirect_bare = "maybe"', "redirect_bare"),
    ],
)
def test_a_wrong_type_is_a_settings_error_naming_the_key(text: str, names: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(env={}, text=text)
    assert names in str(error.value)


def test_no_wrong_type_anywhere_raises_anything_but_a_settings_error() -> None:
    """Every key and item of a document using every shape, replaced by each wrong type."""
    tried = 0
    for path in _paths(BASE):
        for wrong in WRONG:
            text = dumps(_replaced(path, wrong))
            try:
                load_settings(env={}, text=text)
            except SettingsError:
                pass
            except Exception as exc:
                pytest.fail(f"{'.'.join(map(str, path))} = {wrong!r}: {type(exc).__name__}: {exc}")
            tried += 1
    assert tried > 300


def test_the_sanic_command_exits_naming_the_key(tmp_path: Any) -> None:
    path = tmp_path / "lb.toml"
    path.write_text("upstreams = 5\n")
    result = sanic_until_exit(clean_env({"LB_CONFIG": str(path)}))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("load-balancer: configuration error:") and "[[upstreams]]" in line
