"""functools.cache exists: FastChat's training code imports it (Python >= 3.9)."""

import sys

from _smoke import context, report

context()
try:
    from functools import cache
except ImportError as exc:
    report("fail", "from functools import cache fails on Python {}: {} (FastChat needs Python >= 3.9: use a "
                   "base image with 3.9 or newer)".format(sys.version.split()[0], exc))

calls = []


@cache
def square(x):
    calls.append(x)
    return x * x


if (square(3), square(3), calls) != (9, 9, [3]):
    report("fail", "functools.cache did not cache: calls {}".format(calls))
report("pass", "functools.cache works on Python {}".format(sys.version.split()[0]))
