"""Random ids read from the system's randomness in blocks (`bulksms.ids`): never the same twice,
in a thread, across threads, or in a process forked from one that had a block half read."""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from bulksms import ids


def test_ids_are_uuids_as_the_uuid_module_writes_them() -> None:
    for _ in range(100):
        h, t = ids.uuid4_hex(), ids.uuid4_text()
        assert uuid.UUID(h).hex == h and uuid.UUID(h).version == 4
        assert str(uuid.UUID(t)) == t and uuid.UUID(t).version == 4
        assert uuid.UUID(t).variant == uuid.RFC_4122
        assert len(ids.hex_id()) == 32 and int(ids.hex_id(), 16) >= 0


def test_no_id_repeats_across_blocks_and_threads() -> None:
    made: list[str] = []

    def make() -> None:
        made.extend(ids.hex_id() for _ in range(3 * ids.BLOCK // ids.SIZE))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == len(made) == 4 * 3 * ids.BLOCK // ids.SIZE


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_never_makes_its_parent_s_next_ids() -> None:
    ids.hex_id()  # a block half read, as in a gunicorn master before it forks its workers
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.write(write, "".join(ids.hex_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        childs = pipe.read()
    parents = "".join(ids.hex_id() for _ in range(4))
    assert len(childs) == len(parents) == 128
    assert not {childs[i : i + 32] for i in range(0, 128, 32)} & {
        parents[i : i + 32] for i in range(0, 128, 32)
    }


def between_lines(act: Callable[[FrameType], None]) -> Callable[..., Any]:
    """A trace function that calls `act` before every line `bulksms.ids` runs (as a signal
    handler could run there), not within its own calls."""
    acting = False

    def local(frame: FrameType, event: str, _: Any) -> Any:
        nonlocal acting
        if event == "line" and not acting:
            acting = True
            try:
                act(frame)
            finally:
                acting = False
        return local

    return lambda frame, event, _: local if frame.f_code.co_filename == ids.__file__ else None


def test_an_id_made_between_any_two_lines_of_making_another_is_another() -> None:
    made: list[str] = []
    sys.settrace(between_lines(lambda _: made.append(ids.hex_id())))
    try:
        for _ in range(2 * ids.BLOCK // ids.SIZE):  # (through a block's end)
            made.append(ids.hex_id())
    finally:
        sys.settrace(None)
    assert len(made) > 4 * ids.BLOCK // ids.SIZE
    assert len(set(made)) == len(made)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_process_forked_while_an_id_is_taken_makes_another() -> None:
    read, write = os.pipe()

    def fork_once_taken(frame: FrameType) -> None:
        if "piece" in frame.f_locals and os.getpid() == parent and not children:
            children.append(os.fork())

    parent, children = os.getpid(), []
    sys.settrace(between_lines(fork_once_taken))
    try:
        made = ids.hex_id()
    finally:
        sys.settrace(None)
    if os.getpid() != parent:  # pragma: no cover (the child)
        os.write(write, made.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(children[0], 0)
    with os.fdopen(read) as pipe:
        childs = pipe.read()
    assert len(childs) == 32 and childs != made
