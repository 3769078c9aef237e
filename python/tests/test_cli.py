"""`python -m taskhub worker`'s flags read durations as every taskhub binary does."""

import argparse

import pytest

from taskhub.__main__ import _duration, _parser


def test_durations_take_units_and_a_bare_number_is_seconds():
    assert _duration("500ms") == 0.5
    assert _duration("30s") == 30
    assert _duration("1.5s") == 1.5
    assert _duration("2m") == 120
    assert _duration("30") == 30
    args = _parser().parse_args(
        ["worker", "--queue", "q", "--grace", "2m", "--exit-when-idle", "250ms", "json:dumps"])
    assert (args.grace, args.exit_when_idle) == (120, 0.25)


@pytest.mark.parametrize("bad,why", [("soon", "write a number"), ("5 weeks", "unknown unit"),
                                     ("-1s", "negative")])
def test_a_bad_duration_is_named(bad, why):
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        _duration(bad)
