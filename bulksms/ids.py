"""Random ids (a job's, a task's, a request's) from the system's randomness, read in blocks.

`os.urandom` is a system call, and an alert's submit needs three ids (its request's, its job's,
its task's): on a busy host those calls cost it more than making the ids. The bytes are the
same (`os.urandom`'s), each used once; a forked process starts on blocks of its own, never on
its parent's (two gunicorn workers would otherwise make the same job ids).
"""

from __future__ import annotations

import os
import threading

BLOCK = 4096  # bytes read at once: 256 ids of 16 bytes


class _Block(threading.local):
    """This thread's unread randomness. (Each thread its own: no lock in the way.)"""

    def __init__(self) -> None:
        self.data = b""
        self.at = 0
        self.generation = -1


_block = _Block()
_generation = 0


def _forked() -> None:
    global _generation
    _generation += 1  # every block read before the fork is the parent's: read anew


os.register_at_fork(after_in_child=_forked)


def random_bytes(n: int) -> bytes:
    """`os.urandom(n)` (n at most `BLOCK`)."""
    block = _block
    at = block.at
    if block.generation != _generation or at + n > len(block.data):
        block.data, block.generation, at = os.urandom(BLOCK), _generation, 0
    block.at = at + n
    return block.data[at : at + n]


def hex_id() -> str:
    """128 random bits as 32 hex digits (a request's id)."""
    return random_bytes(16).hex()


def uuid4_hex() -> str:
    """A random UUID (version 4) as 32 hex digits, as `uuid.uuid4().hex` (a job's id)."""
    raw = bytearray(random_bytes(16))
    raw[6] = raw[6] & 0x0F | 0x40  # the version
    raw[8] = raw[8] & 0x3F | 0x80  # the variant (RFC 4122)
    return raw.hex()


def uuid4_text() -> str:
    """The same as `str(uuid.uuid4())` gives it (a task's id, as Celery makes them)."""
    h = uuid4_hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
