"""Replace byte-identical copies of CUDA libraries in torch's layer by links to one file.

Run by the torch layer right after it installs (standard library only):
    python cuda_dedupe.py SITE_PACKAGES BUNDLED=ORIGINAL [BUNDLED=ORIGINAL ...]
BUNDLED is a folder (relative to SITE_PACKAGES) where a package ships its own copies of CUDA
libraries (triton/backends/nvidia/lib: CUPTI for its profiler); ORIGINAL is where the CUDA
wheels torch depends on put theirs (nvidia). Every shared library in BUNDLED whose bytes equal an
ORIGINAL file's, or an earlier file's of BUNDLED (one library under three names), becomes a relative
symbolic link to that file: one copy on disk, and every path a process may load resolves to it.
A file whose bytes differ from every other stays as it is: a different build of a library is never
swapped for another. The rule is checked: each link made must resolve to a file of the same bytes
(else exit 1, which fails the build); it prints each link and the bytes saved.
"""

from __future__ import annotations

import hashlib
import os
import sys


def is_library(name: str) -> bool:
    return name.startswith("lib") and (name.endswith(".so") or ".so." in name)


def digest(path: str) -> str:
    value = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            value.update(block)
    return value.hexdigest()


def libraries(folder: str) -> list[str]:
    """Regular files named like a shared library under ``folder``, in a stable order."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if is_library(name) and not os.path.islink(path) and os.path.isfile(path):
                found.append(path)
    return found


def dedupe(site: str, pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str, int]], list[str]]:
    """Link each bundled copy to its original (or first) copy; (links made, problems)."""
    made: list[tuple[str, str, int]] = []
    problems: list[str] = []
    for bundled, original in pairs:
        keep: dict[tuple[int, str], str] = {}
        for path in libraries(os.path.join(site, original)):
            keep.setdefault((os.path.getsize(path), digest(path)), path)
        for path in libraries(os.path.join(site, bundled)):
            key = (os.path.getsize(path), digest(path))
            target = keep.setdefault(key, path)
            if target == path:
                continue
            os.unlink(path)
            os.symlink(os.path.relpath(target, os.path.dirname(path)), path)
            resolved = os.path.realpath(path)
            if resolved != os.path.realpath(target) or (os.path.getsize(resolved), digest(resolved)) != key:
                problems.append(f"{path} -> {target} does not resolve to the same bytes")
            made.append((path, target, key[0]))
    return made, problems


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        print("usage: cuda_dedupe.py SITE_PACKAGES BUNDLED=ORIGINAL [...]", file=sys.stderr)
        return 2
    site = argv[0]
    made, problems = dedupe(site, [tuple(a.split("=", 1)) for a in argv[1:]])
    for path, target, size in made:
        print(f"cuda_dedupe: {os.path.relpath(path, site)} -> {os.path.relpath(target, site)} ({size} bytes)")
    print(f"cuda_dedupe: {len(made)} copies linked, {sum(size for _, _, size in made)} bytes saved")
    for problem in problems:
        print(f"cuda_dedupe: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
