"""Inference and request ids: random version-4 UUIDs, formatted as ``str(uuid.uuid4())``."""

from __future__ import annotations

import os
import uuid

import pytest

from civicml.core.uuids import uuid4_str


def test_ids_are_version_4_uuids_in_the_standard_form() -> None:
    ids = [uuid4_str() for _ in range(3000)]  # crosses several refills of the buffer
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_process_does_not_repeat_the_parents_ids() -> None:
    uuid4_str()  # the parent's buffer holds ids not handed out yet
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, " ".join(uuid4_str() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        child = set(fh.read().decode().split())
    os.waitpid(pid, 0)
    parent = {uuid4_str() for _ in range(10)}
    assert len(child) == 10 and not child & parent
