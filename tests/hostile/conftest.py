"""Fixtures for the hostile suite: enough file descriptors for a thousand sockets a side."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

# 1000 attacking sockets and the server's 1000 ends live in this one process, plus the store,
# the log and the reactor's own descriptors.
NEEDED_FILES = 4096


@pytest.fixture(scope="session", autouse=True)
def enough_open_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < NEEDED_FILES:
        # Raising the soft limit up to the hard one needs no privilege.
        raised = NEEDED_FILES if hard == resource.RLIM_INFINITY else min(NEEDED_FILES, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
