"""Random ids read from the system's randomness in blocks (`bulksms.ids`): never the same twice,
in a thread, across threads, or in a process forked from one that had a block half read."""

from __future__ import annotations

import os
import threading
import uuid

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
        made.extend(ids.hex_id() for _ in range(3 * ids.BLOCK // 16))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == len(made) == 4 * 3 * ids.BLOCK // 16


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
