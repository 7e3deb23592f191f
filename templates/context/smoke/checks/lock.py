"""The packages installed in the image are exactly its lock: no more, no fewer, no other version."""

import glob
import importlib.metadata as md
import os
import re

from _smoke import context, report

_, manifest = context()
# /opt/stackbuild/lock in the image, beside smoke/ (found from this file, so a test can lay one out)
LOCK_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lock"))
# Debian's and Ubuntu's python3-venv (bullseye, focal) put this empty record into every new venv;
# nothing installs it and it holds no files of its own.
DISTRO_NOISE = {("pkg-resources", "0.0.0")}
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")
GIT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*) @ (git\+\S+)")


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


if not manifest.get("locked"):
    report("skip", "this image was built without a lock (stackbuild lock makes one)")
files = sorted(glob.glob(os.path.join(LOCK_DIR, "*.txt")))
if not files:
    report("fail", "the manifest says locked, but {} holds no lock files (rebuild the image: the build copies "
                   "the lock there)".format(LOCK_DIR))
locked, git = {}, {}
for path in files:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            match = PINNED.match(line)
            if match:
                locked[canonical(match.group(1))] = match.group(2)
            match = GIT.match(line)
            if match:
                git[canonical(match.group(1))] = match.group(2)
installed = {}
for dist in md.distributions():
    name = dist.metadata["Name"]
    if name:
        installed[canonical(name)] = dist
problems = []
for name, version in sorted(locked.items()):
    dist = installed.get(name)
    if dist is None:
        problems.append("{}=={} is locked but not installed".format(name, version))
    elif dist.version != version:
        problems.append("{}=={} is installed, the lock says {}".format(name, dist.version, version))
for name, url in sorted(git.items()):
    if name not in installed:
        problems.append("{} ({}) is locked but not installed".format(name, url))
extra = sorted(n for n in installed if n not in locked and n not in git
               and (n, installed[n].version) not in DISTRO_NOISE)
for name in extra:
    problems.append("{}=={} is installed but not in the lock".format(name, installed[name].version))
if problems:
    report("fail", "; ".join(problems[:12]) + ("; and {} more".format(len(problems) - 12) if len(problems) > 12
                                               else "") + " (something installed outside the lock: rebuild)")
report("pass", "the {} installed packages are exactly the lock's".format(len(installed)))
