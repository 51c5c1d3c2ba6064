"""Ids from the buffered OS randomness: never twice the same bytes, in threads or across a fork."""

from __future__ import annotations

import os
import re
import threading
import uuid

import pytest

from tfstorage.domain import ids


def test_ids_are_hex_of_the_asked_length_and_never_repeat() -> None:
    drawn = [ids.random_hex(16) for _ in range(5000)]  # ~20 refills of the buffer
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in drawn)
    assert len(set(drawn)) == len(drawn)
    with pytest.raises(ValueError):
        ids.random_bytes(0)
    with pytest.raises(ValueError):
        ids.random_bytes(4097)


def test_threads_never_get_the_same_bytes() -> None:
    drawn: list[list[str]] = [[] for _ in range(8)]

    def draw(into: list[str]) -> None:
        for _ in range(2000):
            into.append(ids.random_hex(8))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for into in drawn for value in into]
    assert len(set(every)) == len(every) == 16_000


def test_a_file_id_is_a_version_4_uuid() -> None:
    value = uuid.UUID(hex=ids.uuid4_hex())
    assert value.version == 4
    assert value.variant == uuid.RFC_4122


def test_a_forked_child_does_not_repeat_its_parents_next_ids() -> None:
    ids.random_hex(16)  # the buffer is full, most of it still to hand out
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next id goes to the pipe
        try:
            os.write(write, ids.random_hex(16).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        theirs = os.read(read, 64).decode()
    finally:
        os.close(read)
        os.waitpid(child, 0)
    ours = ids.random_hex(16)
    assert len(theirs) == 32
    assert theirs != ours  # without the reset at fork both would take the same 16 bytes
