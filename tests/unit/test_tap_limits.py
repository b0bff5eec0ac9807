"""The memory limits are twistd options like the contract's: --max-open-questions included."""

from __future__ import annotations

import pytest
from twisted.python.usage import UsageError

from vibews.config import Config
from vibews.tap import Options


def test_max_open_questions_is_an_option_with_a_default() -> None:
    """--max-open-questions reaches the configuration; without it the default is 1000."""
    options = Options()
    options.parseOptions(["--max-open-questions", "7", "--max-connections", "20"])
    assert options.config.max_open_questions == 7
    assert options.config.max_connections == 20
    defaults = Options()
    defaults.parseOptions([])
    assert defaults.config.max_open_questions == Config().max_open_questions == 1000


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_max_open_questions_must_be_a_positive_integer(value: str) -> None:
    """Zero, negative or not a number: a usage error (as for every numeric option), not a
    silent default."""
    with pytest.raises(UsageError, match="Parameter type enforcement failed"):
        Options().parseOptions(["--max-open-questions", value])
