"""The twistd service collects cyclic garbage less often than CPython's default (idle-connection
handshakes), never more often than a setting already in force, and leaves a disabled collector
alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from vibews.gctuning import YOUNG_THRESHOLD, tune_garbage_collector
from vibews.tap import Options, makeService


@pytest.fixture(autouse=True)
def _restore_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_default_threshold_is_raised_keeping_the_older_generations() -> None:
    gc.set_threshold(700, 10, 10)
    assert tune_garbage_collector() == (YOUNG_THRESHOLD, 10, 10)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)


def test_a_higher_threshold_is_kept() -> None:
    gc.set_threshold(YOUNG_THRESHOLD * 5, 20, 30)
    assert tune_garbage_collector() == (YOUNG_THRESHOLD * 5, 20, 30)


def test_a_threshold_of_zero_stays_zero() -> None:
    """0 disables automatic collection; raising it would turn the collector back on."""
    gc.set_threshold(0, 10, 10)
    assert tune_garbage_collector() == (0, 10, 10)


def test_twistd_make_service_tunes_the_collector(tmp_path: Path) -> None:
    """``twistd vibews`` applies it (the service is built, not started)."""
    gc.set_threshold(700, 10, 10)
    options = Options()
    options.parseOptions(["--data", str(tmp_path / "data"), "--port", "0"])
    makeService(options)
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
