"""A reload's side of the target slots (``service.pools.slots``): the configured targets of
a new file put in the shared table, and the ones it drops taken out.

In two steps, so that no worker ever routes to a pool that has lost its targets:

1. before the new generation is published, :func:`claim` acquires every target the file
   names (a target that stays keeps its slot, hence its ejection, streaks, window and
   lifetime counts; a new one takes a free slot);
2. once every worker runs the new generation (or after :data:`RELEASE_AFTER_S`, should one
   not answer), :func:`release_unnamed` releases the targets it no longer names; the table
   then drains them (requests in flight finish on them) and frees their slots.

In between, each worker shows only the members its own configuration names (:func:`keep_for`,
given to its ``TargetSync``), so a new target gets no request before its worker runs the file
that adds it, and a dropped one none after.
"""

from __future__ import annotations

from collections.abc import Callable

from service.discovery import Entry, entries_of
from service.pools import ORDER_STEP, Member, SlotsExhausted, SlotTable, settled
from service.settings import Settings, SettingsError

RELEASE_AFTER_S = 5.0  # a worker that has not applied a generation by then is not waited for


def keep_for(settings: Settings) -> Callable[[str, Member], bool]:
    """Whether ``settings`` names a member of a pool: a configured target by its URL, a
    resolved one by the ``resolve`` entry it came from (its name, scheme and port)."""
    named = {(u.name, t.url) for u in settings.upstreams for t in u.static_targets}
    entries: dict[str, list[Entry]] = {}
    for entry in entries_of(settings):
        entries.setdefault(entry.pool, []).append(entry)

    def keep(pool: str, member: Member) -> bool:
        if member.origin:
            return any(entry.owns(member) for entry in entries.get(pool, ()))
        return (pool, member.url) in named

    return keep


def claim(table: SlotTable, settings: Settings) -> None:
    """Acquire every configured target of ``settings`` (new weights and order included).
    All or nothing: :class:`SettingsError` ("needs a restart") before anything is acquired
    when the table has no room for them."""
    present = _members(table)
    wanted = [
        (upstream.name, spec.url, spec.weight, float(position * ORDER_STEP))
        for upstream in settings.upstreams
        for position, spec in enumerate(upstream.targets)
        if not spec.resolve
    ]
    new = sum(1 for pool, url, _, _ in wanted if url not in present.get(pool, set()))
    try:
        with table.change() as change:
            for upstream in settings.upstreams:
                change.pool(upstream.name)
            free = table.layout.slots - table.in_use()
            if new > free:
                raise SettingsError(
                    f"the file adds {new} target(s) and the shared block has room for {free} "
                    "more (it is sized at start-up): needs a restart"
                )
            for pool, url, weight, order in wanted:
                change.acquire(pool, url, weight=weight, order=order)
    except SettingsError:
        raise
    except (SlotsExhausted, ValueError) as exc:  # a full pool directory, a name too long
        raise SettingsError(f"{exc}: needs a restart") from None


def release_unnamed(table: SlotTable, settings: Settings) -> list[tuple[str, str]]:
    """Release every member ``settings`` does not name; ``(pool, url)`` of each."""
    keep = keep_for(settings)
    snapshot = settled(table)
    released = []
    with table.change() as change:
        for pool, members in snapshot.items():
            for member in members:
                if not keep(pool, member) and change.release(pool, member.url):
                    released.append((pool, member.url))
    return released


def members_for(table: SlotTable, settings: Settings) -> dict[str, tuple[Member, ...]]:
    """Every pool of ``settings`` with the members it names, as the table holds them now."""
    keep = keep_for(settings)
    snapshot = settled(table)
    return {
        u.name: tuple(m for m in snapshot.get(u.name, ()) if keep(u.name, m))
        for u in settings.upstreams
    }


def _members(table: SlotTable) -> dict[str, set[str]]:
    return {pool: {m.url for m in members} for pool, members in settled(table).items()}
