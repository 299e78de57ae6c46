"""Each thread's own connection to Redis (`ThreadConnections`), on a real Redis: kept by its
thread, never shared with a forked child, never handed out with an answer left unread. (A
Redis that restarted: `test_small_submits.test_a_submit_after_redis_restarted_is_accepted`.)"""

from __future__ import annotations

import gc
import os
import threading
import weakref

import redis

from bulksms.store.connections import ThreadConnections


def test_a_thread_keeps_its_connection_and_another_thread_has_its_own(rdb: redis.Redis) -> None:
    connections = ThreadConnections(rdb)
    mine = connections.get()
    assert connections.get() is mine
    theirs: list[object] = []
    thread = threading.Thread(target=lambda: theirs.append(connections.get()))
    thread.start()
    thread.join()
    assert theirs and theirs[0] is not mine


def test_a_forked_child_never_writes_on_its_parent_s_socket(rdb: redis.Redis) -> None:
    connections = ThreadConnections(rdb)
    parent = connections.get()
    parent.send_command("PING")
    assert parent.read_response() in ("PONG", b"PONG")
    pid = os.fork()
    if pid == 0:  # the child: a connection of its own, used
        code = 1
        try:
            child = connections.get()
            child.send_command("SET", "forked", "child")
            answer = child.read_response()
            code = 0 if child is not parent and answer in ("OK", b"OK") else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert rdb.get("forked") == "child"
    # The parent's connection is untouched: its next answer is its own command's.
    assert connections.get() is parent
    parent.send_command("GET", "forked")
    assert parent.read_response() in ("child", b"child")


def test_a_connection_left_with_an_unread_answer_is_made_afresh(rdb: redis.Redis) -> None:
    connections = ThreadConnections(rdb)
    left = connections.get()
    left.send_command("SET", "unread", "1")  # (its "OK" never read)
    assert left.can_read(timeout=5)  # (arrived: waiting on the socket)
    rdb.set("answer", "mine")
    again = connections.get()
    again.send_command("GET", "answer")
    assert again.read_response() in ("mine", b"mine")  # not the "OK" left behind


def test_connections_are_closed_with_their_owner_and_not_kept_past_their_thread(
    rdb: redis.Redis,
) -> None:
    """A redis-py connection sits in a reference cycle: left to the collector, its socket could
    be finalized first and warn it was left open (an error under the tests' warnings)."""
    connections = ThreadConnections(rdb)
    mine = connections.get()
    mine.send_command("PING")
    assert mine.read_response() in ("PONG", b"PONG")
    theirs = _made_on_a_thread(connections)
    gc.collect()
    assert theirs() is None  # (the thread's went with it)
    del connections
    gc.collect()
    assert not mine.is_connected


def _made_on_a_thread(connections: ThreadConnections) -> weakref.ref[object]:
    made: list[weakref.ref[object]] = []
    thread = threading.Thread(target=lambda: made.append(weakref.ref(connections.get())))
    thread.start()
    thread.join()
    return made[0]
