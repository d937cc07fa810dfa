"""The change signal: a store that listens learns of every journaled write, whoever made it.

Change watchers (the HTTP watch stream) wait on ``store.changed``; the work signal only moves when
work becomes due, so a change into a rest or final state must still move the change signal.
"""

from __future__ import annotations

from tenure import Event, Kind, Role, State, open_store
from tenure.store.protocol import EngineStore

lamp = Kind(
    "lamp",
    initial="off",
    states=[State("off", 1, Role.REST), State("on", 2, Role.REST), State("gone", 3, Role.FINAL)],
    events=[Event("turn_on", "off", "on"), Event("turn_off", "on", "off"), Event("remove", ["off", "on"], "gone")],
)


def test_another_connection_s_rest_to_rest_change_moves_the_change_signal(store: EngineStore, store_url: str) -> None:
    store.register(lamp)
    writer = store
    watcher = open_store(store_url, [lamp])
    try:
        listener = watcher.listen()
        assert listener is not None
        assert listener.connected.wait(10)
        r = writer.create("lamp")
        for event in ("turn_on", "turn_off", "remove"):
            seen = watcher.changed.seq
            work_seen = watcher.signal.seq
            r = writer.fire(r, event)
            # The relay's own wake-up is the only way the sequence moves here: nothing else bumps it.
            watcher.changed.wait(seen, 10)
            assert watcher.changed.seq != seen, f"no change signal for {event}"
        assert r.state == "gone"
        assert watcher.signal.seq >= work_seen
    finally:
        watcher.close()


def test_a_store_that_does_not_listen_is_not_woken(store: EngineStore) -> None:
    store.register(lamp)
    seen = store.changed.seq
    store.fire(store.create("lamp"), "turn_on")
    assert store.changed.seq == seen
