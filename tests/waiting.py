"""Waiting for a signal instead of sleeping a fixed time: the one poll helper of the test suites.

Contract (both functions): call ``check()`` until it returns a truthy value, and return that value.
A check may also say "not yet" by raising ``AssertionError`` (so it can use ``assert`` and name what
is missing); any other exception propagates at once. The check runs at least once, then every
``interval`` seconds; once ``timeout`` seconds have passed, the wait fails with an
``AssertionError`` that starts with ``message`` and ends with the last failure: the check's own
``AssertionError`` (chained), or its last falsy return value.

``eventually`` sleeps with ``time.sleep``; ``eventually_async`` with ``asyncio.sleep``, and awaits
the check's result when it is awaitable (an ``async def`` check, or a lambda returning a coroutine).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

TIMEOUT = 15.0
INTERVAL = 0.1


_AGAIN = object()


class _Attempts:
    """The bookkeeping both waits share: the deadline, and what to make of a try's outcome."""

    def __init__(self, timeout: float, message: str | None):
        self.timeout, self.message = timeout, message
        self.deadline = time.monotonic() + timeout

    def judge(self, last: Any) -> Any:
        """The value to return, ``_AGAIN`` to try again, or the failure raised once time is up.

        ``last`` is what the check returned, or the AssertionError it raised.
        """
        if last and not isinstance(last, AssertionError):
            return last
        if time.monotonic() < self.deadline:
            return _AGAIN
        what = self.message or "condition not met"
        if isinstance(last, AssertionError):
            raise AssertionError(f"{what} within {self.timeout}s: {last}") from last
        raise AssertionError(f"{what} within {self.timeout}s (last value: {last!r})")


def eventually(check: Callable[[], Any], *, timeout: float = TIMEOUT, interval: float = INTERVAL,
               message: str | None = None) -> Any:
    """``check()``'s first truthy value; see the module's docstring for the contract."""
    attempts = _Attempts(timeout, message)
    while True:
        try:
            last = check()
        except AssertionError as err:
            last = err
        if (result := attempts.judge(last)) is not _AGAIN:
            return result
        time.sleep(interval)


async def eventually_async(check: Callable[[], Any], *, timeout: float = TIMEOUT, interval: float = INTERVAL,
                           message: str | None = None) -> Any:
    """``eventually`` in an event loop: the check may be async, and waiting lets other tasks run."""
    attempts = _Attempts(timeout, message)
    while True:
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
        except AssertionError as err:
            last = err
        if (result := attempts.judge(last)) is not _AGAIN:
            return result
        await asyncio.sleep(interval)
