"""Every checked source patch the image claims is in the installed package that Python imports."""

# smoke-runner: preload torch

import importlib
import importlib.util
import os

from _smoke import context, report

_, manifest = context()
patches = manifest.get("patches", [])
if not patches:
    report("skip", "this image carries no source patch")


def module_for(package, relative):
    """The module a file inside a package is imported as, e.g. torch.distributed.fsdp._state_dict_utils."""
    parts = relative[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package.replace("-", "_")] + parts)


problems, proven = [], []
for patch in patches:
    name = module_for(patch["package"], patch["file"])
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # the patched module must import
        problems.append("patch {}: import {} fails: {}: {}".format(patch["id"], name, type(exc).__name__, exc))
        continue
    path = os.path.realpath(module.__file__ or "")
    if not path.endswith(patch["file"]):
        problems.append("patch {}: {} is imported from {}, not the patched file".format(patch["id"], name, path))
        continue
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    found, left = text.count(patch["replace"]), text.count(patch["find"])
    if found != patch["count"] or left:
        problems.append("patch {}: {} has {} patched and {} unpatched occurrence(s), expected {} and 0".format(
            patch["id"], path, found, left, patch["count"]))
        continue
    proven.append("{} ({} in {})".format(patch["id"], found, name))
if problems:
    report("fail", "; ".join(problems) + " (rebuild the image: its patch layer applies them, and a later install "
                                          "of the package must not replace the patched file)")
report("pass", "patched: " + ", ".join(proven))
