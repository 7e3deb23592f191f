"""The image's Python is the one its release was resolved for."""

import sys

from _smoke import context, report

_, manifest = context()
want = tuple(int(p) for p in manifest["python"].split("."))
have = sys.version_info[:2]
if have != want:
    report("fail", "Python {}.{} in the image, the release needs {} (rebuild from the profile's base)".format(
        have[0], have[1], manifest["python"]))
report("pass", "Python {}".format(sys.version.split()[0]))
