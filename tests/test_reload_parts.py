"""The parts of reloading, in this process (no server): the shared region, what needs a
restart, the watch, the slot table's two steps, ``;resolve`` entries. The whole, with real
processes and signals, is ``tests/test_reload.py``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from service.admission.policy import compile_limits, route_plans
from service.factory import RESTART_ONLY
from service.pools import Member, PoolLayout, SlotTable
from service.reload import changes, resolved, targets
from service.reload.region import MAX_TEXT_BYTES, ConfigLayout, ConfigRegion
from service.reload.source import SETTLE_LOOK_S, ContentWatch, Settling, read_file, text_of
from service.settings import Settings, SettingsError, load_settings
from service.sharedmem import Plan, SharedBlock

if TYPE_CHECKING:
    from service.reload.leader import Leader

BASE = """
[[upstreams]]
name = "api"
url_env = "PARTS_API_URL"
url = "http://10.0.0.1:80, http://10.0.0.2:80"

[[upstreams]]
name = "ui"
url_env = "PARTS_UI_URL"
url = "http://10.0.0.9:80"

[[routes]]
prefix = "/api"
upstream = "api"

[[routes]]
prefix = "/"
upstream = "ui"
"""


def settings(text: str = BASE, **env: str) -> Settings:
    return load_settings(env=env, text=text)


def region_and_block(rows: int = 2) -> tuple[ConfigRegion, SharedBlock]:
    plan = Plan(rows=rows)
    layout = ConfigLayout(plan)
    block = SharedBlock(plan.allocate(), plan)
    return ConfigRegion(block, layout), block


def test_the_region_publishes_whole_generations_and_keeps_the_last_error() -> None:
    region, block = region_and_block()
    assert region.generation == 0
    assert region.start("a = 1\n", "ab" * 32, 1000.0)
    assert not region.start("b = 2\n", "cd" * 32, 2000.0)  # once per block
    first = region.published()
    assert (first.generation, first.text, first.sha256, first.loaded_at) == (
        1, "a = 1\n", "ab" * 32, 1000.0,
    )  # fmt: skip

    region.fail("LB_CONFIG: 'x' is not valid TOML")
    assert region.generation == 1
    assert region.outcomes().last_error == "LB_CONFIG: 'x' is not valid TOML"
    assert region.publish("é = 3\n", "ef" * 32, ("LB_PORT",)) == 2
    second = region.published()
    assert (second.text, second.pending_restart) == ("é = 3\n", ("LB_PORT",))
    outcomes = region.outcomes()
    assert (outcomes.applied, outcomes.failed, outcomes.last_error) == (1, 1, None)

    region.fail("x" * 5000)  # an error is bounded
    assert region.outcomes().last_error.endswith("...")  # type: ignore[union-attr]
    row = block.claim(os.getpid())
    assert not region.every_worker_runs(2)
    region.applied(row, 2)
    assert region.every_worker_runs(2)


def test_requests_are_taken_once_and_a_half_written_region_heals() -> None:
    region, _ = region_and_block()
    region.start("", "00" * 32, 0.0)
    assert not region.take_request()
    region.request()
    region.request()  # two signals before the leader looks: one reload
    assert region.take_request() and not region.take_request()
    # a writer killed between its two sequence steps leaves the number odd: readers give up
    # after a while rather than spin for ever, and the next writer makes it even again
    mem = region._mem
    mem[region._at] += 1
    with pytest.raises(RuntimeError):
        region.published()
    region.unchanged()
    assert region.published().generation == 1


def test_what_needs_a_restart_keeps_its_running_value_and_is_named() -> None:
    started = settings()
    text = "[server]\nport = 9000\nworkers = 3\nlog_format = 'json'\naccess_log = false\n"
    text += "[cluster]\nname = 'other'\n[resolver]\nmax_targets = 4\ntimeout = 1.0\n"
    new, waiting = changes.running(settings(text + BASE), started, RESTART_ONLY)
    assert waiting == (
        "LB_PORT", "LB_WORKERS", "LB_LOG_FORMAT", "LB_CLUSTER_NAME", "LB_RESOLVER_MAX_TARGETS",
    )  # fmt: skip
    assert (new.port, new.workers, new.log_format) == (7100, 1, "text")
    assert new.cluster == started.cluster and new.resolver.max_targets == 32
    assert new.access_log is False and new.resolver.timeout == 1.0  # these change live
    assert changes.running(settings(), started, RESTART_ONLY) == (started, ())


def test_the_summary_says_what_changed() -> None:
    old = settings()
    text = (
        BASE.replace("10.0.0.2:80", "10.0.0.3:80") + '[[routes]]\nprefix = "/x"\nupstream = "ui"\n'
    )
    summary = changes.summary(old, settings("[proxy]\nread_timeout = 3.0\n" + text))
    assert summary == "route /x added, upstream api (targets), proxy.read_timeout"


def test_the_environment_still_wins_over_a_reloaded_file() -> None:
    new = settings(BASE, PARTS_API_URL="http://10.9.9.9:80", LB_READ_TIMEOUT="7")
    assert [t.url for t in new.upstream("api").targets] == ["http://10.9.9.9:80"]
    assert new.proxy.read_timeout == 7.0


def test_reading_the_file_bounded_and_as_text(tmp_path: Path) -> None:
    path = tmp_path / "lb.toml"
    missing = read_file(path)
    with pytest.raises(SettingsError, match="cannot read"):
        text_of(missing, path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(SettingsError, match="not UTF-8"):
        text_of(read_file(path), path)
    path.write_bytes(b"#" * (MAX_TEXT_BYTES + 1))
    with pytest.raises(SettingsError, match="the most a reload takes"):
        text_of(read_file(path), path)


def test_the_watch_acts_on_settled_content_behind_a_symlink_swap(tmp_path: Path) -> None:
    for version, text in (("..v1", "a = 1\n"), ("..v2", "a = 2\n")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "lb.toml").write_text(text)
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "lb.toml").symlink_to("..data/lb.toml")
    watch = ContentWatch(tmp_path / "lb.toml")
    known = read_file(tmp_path / "lb.toml").sha256
    assert not watch.changed(known)
    (tmp_path / "..tmp").symlink_to("..v2")
    (tmp_path / "..tmp").replace(tmp_path / "..data")  # what the kubelet does
    assert not watch.changed(known)  # seen once: it may still be being written
    assert watch.changed(known)  # the same twice in a row: act
    assert not watch.changed(read_file(tmp_path / "lb.toml").sha256)


def host(start: Settings, rows: int = 2) -> tuple[SlotTable, SharedBlock]:
    plan = Plan(rows=rows)
    layout = PoolLayout(plan, 4, pools=len(start.upstreams))
    block = SharedBlock(plan.allocate(), plan)
    table = SlotTable(block, layout.slots)
    table.seed(start)
    return table, block


def members(table: SlotTable) -> dict[str, list[str]]:
    snapshot = table.snapshot()
    assert snapshot is not None
    return {pool: [m.url for m in found] for pool, found in snapshot[1].items()}


def test_targets_are_claimed_before_and_released_after_a_generation() -> None:
    start = settings()
    table, _ = host(start)
    slot_of = {m.url: m.index for m in table.members("api")}
    new = settings(BASE.replace("http://10.0.0.2:80", "http://10.0.0.3:80;weight=2"))
    targets.claim(table, new)
    # both the dropped and the new target are members until every worker runs the file...
    assert members(table)["api"] == [
        "http://10.0.0.1:80",
        "http://10.0.0.2:80",
        "http://10.0.0.3:80",
    ]
    # ...but each worker's pools show what its own configuration names
    keep_old, keep_new = targets.keep_for(start), targets.keep_for(new)
    added = next(m for m in table.members("api") if m.url.endswith("0.3:80"))
    assert keep_new("api", added) and not keep_old("api", added)
    assert targets.members_for(table, new)["api"][1].weight == 2
    assert targets.release_unnamed(table, new) == [("api", "http://10.0.0.2:80")]
    assert members(table)["api"] == ["http://10.0.0.1:80", "http://10.0.0.3:80"]
    assert table.members("api")[0].index == slot_of["http://10.0.0.1:80"]  # it stayed: its slot


def test_more_new_targets_than_free_slots_change_nothing() -> None:
    start = settings()
    table, _ = host(start)  # 4 slots, 3 in use
    many = ", ".join(f"http://10.0.1.{i}:80" for i in range(3))
    with pytest.raises(SettingsError, match=r"room for 1 more.*needs a restart"):
        targets.claim(table, settings(BASE.replace("http://10.0.0.1:80, http://10.0.0.2:80", many)))
    assert members(table) == {
        "api": ["http://10.0.0.1:80", "http://10.0.0.2:80"],
        "ui": ["http://10.0.0.9:80"],
    }


def test_a_resolve_entry_keeps_its_record_and_a_new_one_needs_a_restart() -> None:
    resolving = BASE.replace('"http://10.0.0.9:80"', '"http://ui.test:80;resolve"')
    start = settings(resolving)
    moved = settings(
        resolving.replace(
            "http://ui.test:80;resolve", "http://10.0.0.8:80, http://ui.test:80;resolve;weight=2"
        )
    )
    (entry,) = resolved.entries_for(moved, start)
    assert (entry.number, entry.position, entry.weight) == (0, 1, 2)
    member = Member(7, "http://10.1.1.1:80", 2, "ui.test", 1_000_000.0)
    assert targets.keep_for(moved)("ui", member)
    assert not targets.keep_for(settings())("ui", member)  # the entry is gone: so is its target
    with pytest.raises(SettingsError, match=r"new ;resolve entry.*needs a restart"):
        resolved.entries_for(settings(resolving.replace("ui.test", "other.test")), start)


def test_admission_control_needs_a_restart_and_covers_a_reloaded_route() -> None:
    """Limits and caps are laid out in the block at start-up: a reload names their changes and
    keeps them; a route it adds is covered by the limits the host started with."""
    capped = BASE.replace(
        'url_env = "PARTS_API_URL"', 'url_env = "PARTS_API_URL"\nmax_requests = 5'
    )
    started = settings(capped, LB_RATE_LIMIT="5/s")
    extra = '\n[[upstreams]]\nname = "extra"\nurl_env = "PARTS_EXTRA_URL"\n'
    extra += 'url = "http://10.0.0.7:80"\nmax_requests = 3\n'
    extra += '[[routes]]\nprefix = "/extra"\nupstream = "extra"\n'
    limits = '[[limits]]\nname = "more"\nrate = "1/s"\n'
    text = limits + BASE + extra  # api's cap gone, a new pool with one, a new [[limits]]
    new, waiting = changes.running(settings(text, LB_RATE_LIMIT="9/s"), started, RESTART_ONLY)
    assert waiting == (
        "LB_RATE_LIMIT", "[[limits]]", "PARTS_API_MAX_REQUESTS", "PARTS_EXTRA_MAX_REQUESTS",
    )  # fmt: skip
    assert new.admission == started.admission and new.limits == started.limits == ()
    assert [(u.name, u.max_requests) for u in new.upstreams] == [
        ("api", 5), ("ui", 0), ("extra", 0),
    ]  # fmt: skip

    limit_set = compile_limits(started)
    plans = route_plans(started, limit_set)
    assert set(plans) == {"api", "ui", "stats"} and plans["api"].pool == 0
    replanned = route_plans(new, limit_set, [u.name for u in started.upstreams])
    assert set(replanned) == {"api", "ui", "extra", "stats"}  # the new route is limited too
    assert replanned["api"].pool == 0 and replanned["extra"].pool == -1


def a_leader(path: Path) -> tuple[Leader, ConfigRegion, Settings]:
    """The reload leader of a host started on ``BASE``, written to ``path`` and published as
    generation 1; with its region and its starting settings."""
    from service.reload.leader import Leader

    start = settings()
    table, _ = host(start)
    region, _ = region_and_block()
    path.write_text(BASE)
    region.start(BASE, read_file(path).sha256, 0.0)
    return Leader(region, table, start, path, {}, RESTART_ONLY), region, start


def test_any_exception_while_loading_is_a_refused_file_and_the_leader_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only a SettingsError: a surprise in the loader refuses the file, says why in
    ``last_error``, and the next file is taken."""
    from service.reload import leader as leading

    path = tmp_path / "lb.toml"
    leader, region, start = a_leader(path)

    def broken(**_: object) -> Settings:
        raise RuntimeError("a surprise in the loader")

    monkeypatch.setattr(leading, "load_settings", broken)
    path.write_text(BASE + "# changed\n")
    assert not leader.reload("SIGHUP", start)
    outcomes = region.outcomes()
    assert outcomes.failed == 1 and region.generation == 1
    assert "RuntimeError" in (outcomes.last_error or "")
    assert "a surprise in the loader" in (outcomes.last_error or "")

    monkeypatch.undo()
    path.write_text(BASE + "# changed again\n")
    assert leader.reload("SIGHUP", start)
    assert region.generation == 2 and region.outcomes().last_error is None


def test_sighup_waits_for_the_file_to_settle(tmp_path: Path) -> None:
    """A SIGHUP sent while the file is still being written reloads what it settles on, not
    the half it saw first; the leader's loop is not blocked meanwhile."""
    import time

    path = tmp_path / "lb.toml"
    leader, region, start = a_leader(path)
    half = BASE.replace("10.0.0.9", "10.0.0.8")  # a file that loads, its end still to come
    final = half + '\n[[routes]]\nprefix = "/more"\nupstream = "api"\n'

    path.write_text(half)
    region.request()
    began = time.monotonic()
    leader.turn(start, 1)
    assert time.monotonic() - began < SETTLE_LOOK_S / 2  # a look, no wait
    assert region.generation == 1  # seen once: it may still be being written
    path.write_text(final)
    time.sleep(SETTLE_LOOK_S + 0.05)
    leader.turn(start, 1)  # changed since the first look: not yet
    assert region.generation == 1
    time.sleep(SETTLE_LOOK_S + 0.05)
    leader.turn(start, 1)  # the same twice in a row: reloaded
    assert region.generation == 2 and region.published().text == final
    assert region.outcomes().failed == 0


def test_a_file_that_keeps_changing_after_sighup_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "lb.toml"
    path.write_text("a = 0\n")
    settling = Settling(path, now=0.0)
    every = SETTLE_LOOK_S + 0.01
    for step in range(1, 100):
        path.write_text(f"a = {step}\n")
        read = settling.look(now=step * every)
        if read is not None:
            break
    assert read is not None and read.data is None and 5.0 <= step * every < 5.0 + every
    with pytest.raises(SettingsError, match="still changing 5 s after SIGHUP"):
        text_of(read, path)
    settled = Settling(path, now=0.0)
    assert settled.look(now=SETTLE_LOOK_S / 2) is None  # not yet time to look again
    assert settled.look(now=SETTLE_LOOK_S) == read_file(path)
