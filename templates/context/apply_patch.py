"""Apply one checked source patch inside the image; fail the build if it does not fit.

Usage: python apply_patch.py PATCH.json [PATCH.json ...]

Each JSON file names an installed package, a file inside it, the exact text to find, how many
times it must occur, and its replacement. Anything unexpected (package missing, file missing,
text found a different number of times) exits non-zero with a message that names the patch,
so a torch upgrade that moved the line breaks the build instead of shipping an unpatched image.
Runs on the image's own Python (3.8+), standard library only.
"""

import importlib.util
import json
import os
import sys


def package_dir(name):
    spec = importlib.util.find_spec(name.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def apply(path):
    with open(path, encoding="utf-8") as handle:
        patch = json.load(handle)
    pid = patch["id"]
    root = package_dir(patch["package"])
    if root is None:
        return "patch {}: package '{}' is not installed".format(pid, patch["package"])
    target = os.path.join(root, patch["file"])
    if not os.path.isfile(target):
        return "patch {}: {} does not exist".format(pid, target)
    with open(target, encoding="utf-8") as handle:
        text = handle.read()
    found = text.count(patch["find"])
    if found != patch["count"]:
        return "patch {}: expected {} occurrence(s) of {!r} in {}, found {}".format(
            pid, patch["count"], patch["find"], target, found
        )
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(text.replace(patch["find"], patch["replace"]))
    print("patch {}: applied to {} ({} occurrence(s))".format(pid, target, found))
    return None


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    errors = [e for e in (apply(p) for p in argv[1:]) if e]
    for error in errors:
        print("error: " + error, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
