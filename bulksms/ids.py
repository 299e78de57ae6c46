"""Random ids (a job's, a task's, a request's) from the system's randomness, read in blocks.

`os.urandom` is a system call, and an alert's submit needs four ids (its request's, its job's,
its task message's two): on a busy host those calls cost it more than making the ids. The bytes
are the same (`os.urandom`'s), each used once; a forked process starts on blocks of its own,
never on its parent's (two gunicorn workers would otherwise make the same job ids).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

BLOCK = 4096  # bytes read at once: 256 ids of 16 bytes
SIZE = 16


class _Block(threading.local):
    """This thread's unread randomness, as the 16-byte pieces left. (Each thread its own: no
    lock in the way.)"""

    def __init__(self) -> None:
        self.pieces: Iterator[bytes] = iter(())
        self.generation = -1


_block = _Block()
_generation = 0


def _forked() -> None:
    global _generation
    _generation += 1  # every block read before the fork is the parent's: read anew


os.register_at_fork(after_in_child=_forked)


def _random16() -> bytes:
    """16 bytes of `os.urandom`, never handed out twice: each piece is taken by one `next`
    (a signal handler's call in between takes another), and a process forked while taking
    one drops it (its parent has it too)."""
    block = _block
    while True:
        if block.generation == _generation:
            piece = next(block.pieces, None)
            if piece is not None and block.generation == _generation:
                return piece
        data, block.generation = os.urandom(BLOCK), _generation
        block.pieces = iter([data[at : at + SIZE] for at in range(0, BLOCK, SIZE)])


def hex_id() -> str:
    """128 random bits as 32 hex digits (a request's id)."""
    return _random16().hex()


def uuid4_hex() -> str:
    """A random UUID (version 4) as 32 hex digits, as `uuid.uuid4().hex` (a job's id)."""
    raw = bytearray(_random16())
    raw[6] = raw[6] & 0x0F | 0x40  # the version
    raw[8] = raw[8] & 0x3F | 0x80  # the variant (RFC 4122)
    return raw.hex()


def uuid4_text() -> str:
    """The same as `str(uuid.uuid4())` gives it (a task's id, as Celery makes them)."""
    h = uuid4_hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
