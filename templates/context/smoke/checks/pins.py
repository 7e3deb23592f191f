"""Every pinned package is installed at exactly its pinned version, and imports."""

# smoke-runner: preload torch

import importlib
import importlib.metadata as md
import json

from _smoke import context, report

_, manifest = context()


def installed(name):
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


def modules_of(dist):
    top = dist.read_text("top_level.txt")
    if top:
        # some wheels list paths ("sentencepiece/__init__"): the module is the first part
        names = {m.replace("\\", "/").split("/")[0] for m in top.split()}
        return sorted(n for n in names if n.isidentifier() and not n.startswith("_"))
    names = set()
    for path in dist.files or ():
        parts = str(path).split("/")
        if parts[0].endswith((".dist-info", ".data")) or parts[0] == "..":
            continue
        if len(parts) > 1 and parts[1] == "__init__.py":
            names.add(parts[0])
        elif len(parts) == 1 and parts[0].endswith(".py"):
            names.add(parts[0][:-3])
    return sorted(n for n in names if not n.startswith("_"))


problems = []
for name, wanted in sorted(manifest["pins"].items()):
    dist = installed(name)
    if dist is None:
        problems.append("{} is not installed".format(name))
        continue
    if wanted.startswith("git+"):
        direct = dist.read_text("direct_url.json")
        commit = json.loads(direct).get("vcs_info", {}).get("commit_id") if direct else None
        if commit is None or commit not in wanted:
            problems.append("{} is not from {} (found {})".format(name, wanted, commit or dist.version))
    elif dist.version != wanted:
        problems.append("{}=={} is installed, the release pins {}".format(name, dist.version, wanted))
    for module in modules_of(dist)[:3]:
        try:
            importlib.import_module(module)
        except Exception as exc:  # an import that raises anything is a broken package
            problems.append("import {} ({}) fails: {}: {}".format(module, name, type(exc).__name__,
                                                                  str(exc).splitlines()[0] if str(exc) else ""))
if problems:
    report("fail", "; ".join(problems) + " (rebuild the image; a later install must not change pins)")
report("pass", "{} pins installed at their versions and importable".format(len(manifest["pins"])))
