"""What the lab prints: each step with the seconds since the run began, and failures."""

import sys
import time

_START = time.monotonic()


def elapsed():
    return time.monotonic() - _START


def step(message):
    print(f"--- {message} ({elapsed():.0f}s)", flush=True)


def info(message):
    print(f"    {message}", flush=True)


class LabFailure(Exception):
    """A check failed: the message says what was expected and what was seen."""


def fail(message):
    raise LabFailure(message)


def warn(message):
    print(f"lab: {message}", file=sys.stderr, flush=True)
