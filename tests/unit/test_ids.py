"""Random ids from the buffered pool."""

from __future__ import annotations

import os
import uuid

from app import ids


def test_random_ids_are_uuid4_and_do_not_repeat() -> None:
    made = [ids.random_uuid() for _ in range(5000)]  # past several refills of the buffer
    assert len(set(made)) == len(made)
    assert all(uuid.UUID(text).version == 4 and uuid.UUID(text).variant == uuid.RFC_4122 for text in made)


def test_a_forked_process_does_not_repeat_its_parents_bytes() -> None:
    ids.random_bytes(1)  # the buffer holds the next bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, ids.random_bytes(32))
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 32) != ids.random_bytes(32)
    os.close(read)
    os.close(write)
