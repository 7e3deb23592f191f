"""Size of each current cuda image with its two possible bases, and the CUDA it carries twice.

    python bench/cuda_size.py [--release R] [--markdown FILE]

For each stack's cuda target (its default release, or R), two columns:

- **slim**: Debian slim with CUDA from the wheels torch depends on (the target's base where the
  release compiles nothing on CUDA 12). Measured on the image built here (`stackbuild build S -t
  cuda`): bytes (the engine's image size), layers, the bytes of layers it shares with the other
  stacks' images and with its cpu twin, and the CUDA libraries bench/cuda_libs.py finds inside it
  (bytes, and bytes of a soname present twice).
- **nvidia/cuda**: the same pins on `nvidia/cuda:<cuda>.x-cudnn-devel-ubuntu24.04`. That image
  cannot be pulled here (no Docker Hub), so this column is computed, and says so: stackbuild's
  layers are taken from the slim image built here (the same wheels; the base's Python differs),
  and the CUDA libraries the base brings are NVIDIA's runtime, devel and cuDNN packages (from
  NVIDIA's public Dockerfiles: cuda-libraries, libnccl2, cuda-nvtx, cuda-command-line-tools,
  libcudnn9) whose sonames torch's wheels also ship, each counted at the wheel's size of that
  soname (same CUDA release; the base's cuDNN 9 is another 9.x). The base's headers, static
  libraries and tools are not counted: the total is a lower bound.

Where a target's base is nvidia/cuda (a release that compiles on CUDA 12: no nvcc on PyPI) there is
no slim image to measure; the row says so, and the estimate uses its cpu image if built here.

`--wheels` adds, for every slim cuda target with a lock (built here or not: a deepspeed or
flash-attn image whose compile does not fit this machine), the CUDA its wheels carry, computed
without an image: the lock's [torch] and [toolkit] sections (the layers that hold CUDA) are
installed with `uv pip install --target` for the target's Python and platform, hash-checked,
the torch layer's cuda_dedupe.py runs on them as in the image, and bench/cuda_libs.py scans them
(CUDA libraries, bytes of a soname present twice, of them two versions). Those columns say
"computed (wheels)"; the image's own bytes stay "measured" or "?".
Anchors: NVIDIA's NGC PyTorch image is about 20 GB on disk (research/training-images.md); the
goal is every current cuda image at most half of that, with 0 bytes of CUDA twice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from _shared import ROOT  # noqa: F401 - the checkout on sys.path

from builder.profile import versions as compat  # noqa: E402
from builder.plan.build_plan import plan_for, platform_of  # noqa: E402
from builder.profile.load import available_stacks, load_stack  # noqa: E402
from builder.render.dockerfile import render_context  # noqa: E402

NGC_PYTORCH_BYTES = 20 * 10 ** 9
# The sonames an nvidia/cuda X.Y-cudnn-devel image installs (NVIDIA's runtime, devel and cudnn
# Dockerfiles: cuda-libraries-X-Y, libnccl2, cuda-nvtx-X-Y, cuda-command-line-tools-X-Y (CUPTI),
# libcudnn9-cuda-X), by library name: every soname of these names torch's wheels also ship is a copy.
NVIDIA_DEVEL_LIBRARIES = re.compile(
    r"^lib(cudart|cublas|cublasLt|cufft|cufftw|curand|cusolver|cusolverMg|cusparse|nvrtc|nvrtc-builtins|"
    r"nvJitLink|cufile|cufile_rdma|cupti|nvperf_host|nvperf_target|pcsamplingutil|checkpoint|nccl|"
    r"nvToolsExt|cudnn\w*|npp\w*|nvjpeg|nvblas)\.so")
METADATA = ("ENV", "LABEL", "CMD", "SHELL", "ARG", "ENTRYPOINT", "EXPOSE", "USER", "VOLUME",
            "STOPSIGNAL", "HEALTHCHECK", "ONBUILD", "MAINTAINER")


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def image_exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def layers(ref: str) -> list[tuple[str, int]]:
    """(digest, bytes) of each layer, oldest first: RootFS digests matched to the history's sizes."""
    inspect = json.loads(docker("image", "inspect", ref))[0]
    digests = inspect["RootFS"]["Layers"]
    history = [json.loads(line) for line in
               docker("history", "--no-trunc", "--human=false", "--format", "{{json .}}", ref).splitlines()]
    # BuildKit stores a (near-empty) layer for WORKDIR, the classic builder does not: try both readings
    for metadata in (METADATA, METADATA + ("WORKDIR",)):
        made = []
        for entry in reversed(history):  # oldest first
            created = re.sub(r"^/bin/sh -c #\(nop\)\s*", "", entry["CreatedBy"]).strip()
            if created.split(" ", 1)[0].upper() in metadata and int(entry["Size"]) == 0:
                continue
            made.append(int(entry["Size"]))
        if len(made) == len(digests):
            return list(zip(digests, made))
    return [(digest, 0) for digest in digests]  # an engine that reports history otherwise: sizes unknown


def cuda_libraries(ref: str) -> dict:
    """bench/cuda_libs.py run inside the image, offline, in a container removed after."""
    script = (Path(__file__).parent / "cuda_libs.py").read_text()
    out = docker("run", "--rm", "--network", "none", "--label", "io.stackbuild.bench=cuda_size", "--entrypoint",
                 "python3", ref, "-c", script)
    return json.loads(out)


def from_wheels(name: str, release: str) -> dict | None:
    """The CUDA the cuda target's torch and toolkit layers carry, computed from its lock's wheels (no image):
    installed into a folder, deduplicated as the torch layer does, scanned by cuda_libs.py."""
    import shutil
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    import cuda_libs

    context = render_context(plan_for(name, release, "cuda"))
    plan = context.plan
    if plan.lock is None or plan.target.base.cuda is not None:
        return None
    files = dict(context.files)
    folder = Path(tempfile.mkdtemp(prefix="cuda-size-"))
    try:
        site = folder / "site-packages"
        for key in ("lock/2-torch.txt", "lock/2-toolkit.txt"):
            if key not in files:
                continue
            (folder / key.split("/")[1]).write_bytes(files[key])
            subprocess.run([sys.executable, "-m", "uv", "pip", "install", "--target", str(site), "--no-deps",
                            "--require-hashes", "--python-version", plan.target.python, "--python-platform",
                            platform_of(plan), "-q", "-r", str(folder / key.split("/")[1])], check=True)
        if plan.bundled_copies:
            (folder / "cuda_dedupe.py").write_bytes(files["cuda_dedupe.py"])
            subprocess.run([sys.executable, str(folder / "cuda_dedupe.py"), str(site),
                            *(f"{a}={b}" for a, b in plan.bundled_copies)], check=True, stdout=subprocess.DEVNULL)
        found = cuda_libs.scan(str(site))
        found["installed_bytes"] = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())
        return found
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def gb(n: float | None) -> str:
    return "?" if n is None else f"{n / 1e9:.3f} GB"


def rows(release: str | None, wheels: bool = False) -> list[dict]:
    out = []
    for name in available_stacks():
        stack = load_stack(name)
        rel = stack.release(release)
        if "cuda" not in rel.targets:
            continue
        plan = plan_for(name, rel.name, "cuda")
        slim = plan.target.base.cuda is None
        ref = f"stackbuild/{name}:{rel.name}-{'cuda' if slim else 'cpu'}"
        row = {"stack": f"{name}@{rel.name}", "base": plan.target.base.ref, "cuda": rel.accelerator_version("cuda"), "slim": slim,
               "ref": ref if image_exists(ref) else None, "cpu": f"stackbuild/{name}:{rel.name}-cpu",
               "keys": layer_keys(name, rel.name, "cuda" if slim else "cpu"),
               "all_keys": sorted({k for t in rel.targets for k in layer_keys(name, rel.name, t)})}
        if row["ref"]:
            row["bytes"] = int(json.loads(docker("image", "inspect", ref))[0]["Size"])
            row["layers"] = layers(ref)
            row["libs"] = cuda_libraries(ref)
            base = f"debian:{compat.parse_base_image(plan.target.base.ref).release}-slim" if slim else \
                next(t.base.ref for t in rel.targets.values() if t.base.cuda is None)
            row["base_bytes"] = int(json.loads(docker("image", "inspect", base))[0]["Size"]) if image_exists(base) \
                else 0
            copies = [lib for lib in row["libs"]["libraries"] if NVIDIA_DEVEL_LIBRARIES.match(lib["soname"])
                      and "/site-packages/nvidia/" in lib["path"]]
            row["nvidia_duplicate_bytes"] = sum(lib["bytes"] for lib in copies)
            row["nvidia_lower_bound"] = row["bytes"] - row["base_bytes"] + row["nvidia_duplicate_bytes"]
        if wheels and slim:
            row["wheels"] = from_wheels(name, rel.name)
        out.append(row)
    return out


def layer_keys(name: str, release: str, target: str) -> list[str]:
    """One key per layer an image of this render has, oldest first: its base, then each COPY, RUN and
    WORKDIR with everything before it and the bytes a COPY copies. Two images share a layer when
    built on one engine (BuildKit's cache, as CI and publish.yml build them) iff they share its key."""
    context = render_context(plan_for(name, release, target))
    files = dict(context.files)
    keys, chain = [], hashlib.sha256(context.plan.target.base.ref.encode()).hexdigest()
    keys.append(chain)
    text = re.sub(r"\\\n", " ", context.dockerfile)
    for line in text.splitlines():
        word = line.split(" ", 1)[0]
        if word not in ("COPY", "RUN", "WORKDIR", "ENV", "SHELL"):
            continue
        digest = hashlib.sha256((chain + line).encode())
        if word == "COPY":
            for source in line.split()[1:-1]:
                for path in sorted(k for k in files if k == source.rstrip("/") or k.startswith(source.rstrip("/") + "/")):
                    digest.update(path.encode() + files[path])
        chain = digest.hexdigest()
        if word in ("COPY", "RUN", "WORKDIR"):
            keys.append(chain)
    return keys


def shared_bytes(row: dict, others: list[dict]) -> int | None:
    """Bytes of this image's layers that another stack's current image (cuda or cpu) has too, by
    construction (layer_keys): stored once on a host or registry that holds both."""
    if not row.get("layers") or len(row["keys"]) != len(row["layers"]):
        return None  # the image here is not the current render's (built before a change): rebuild it
    theirs = {k for other in others if other["stack"] != row["stack"] for k in other.get("all_keys", ())}
    return sum(size for key, (_, size) in zip(row["keys"], row["layers"]) if key in theirs)


def table(measured: list[dict]) -> str:
    lines = ["| stack (cuda target) | its base | slim: bytes | layers | shared with other images | CUDA libs | "
             "CUDA twice (of it: identical copies; two versions) | nvidia/cuda: bytes (computed, lower bound) | CUDA twice (computed) | <= half of NGC |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in measured:
        if row.get("ref") and row["slim"]:
            libs = row["libs"]
            lines.append(
                f"| {row['stack']} | {row['base']} | {gb(row['bytes'])} | {len(row['layers'])} | "
                f"{gb(shared_bytes(row, measured))} | {gb(libs['bytes'])} | {gb(libs['duplicate_bytes'])} "
                f"({gb(libs.get('copy_bytes'))}; {gb(libs['version_bytes'])}) | "
                f">= {gb(row['nvidia_lower_bound'])} | ~{gb(row['nvidia_duplicate_bytes'])} | "
                f"{'yes' if row['bytes'] <= NGC_PYTORCH_BYTES / 2 else 'no'} |")
        elif row.get("ref"):
            lines.append(
                f"| {row['stack']} | {row['base']} | n/a: compiles on CUDA {row['cuda']} (no nvcc on PyPI) | | | | | "
                f">= {gb(row['nvidia_lower_bound'])} (from its cpu image {row['ref']}) | "
                f"~{gb(row['nvidia_duplicate_bytes'])} | ? |")
        else:
            what = "slim cuda image" if row["slim"] else "cpu image (for the estimate)"
            lines.append(f"| {row['stack']} | {row['base']} | not built here: no {what} | | | | | | | |")
    computed = [row for row in measured if row.get("wheels")]
    if computed:
        lines += ["", "Computed from each lock's [torch] and [toolkit] wheels (no image; cuda_dedupe.py applied as "
                  "the torch layer applies it):", "",
                  "| stack (cuda target) | torch + toolkit layers: bytes (computed) | CUDA libs (computed) | "
                  "CUDA twice (computed; of it: identical copies; two versions) | the sonames twice |", "|---|---|---|---|---|"]
        for row in computed:
            libs = row["wheels"]
            lines.append(f"| {row['stack']} | {gb(libs['installed_bytes'])} | {gb(libs['bytes'])} | "
                         f"{gb(libs['duplicate_bytes'])} ({gb(libs['copy_bytes'])}; {gb(libs['version_bytes'])}) | "
                         f"{', '.join(libs['duplicates']) or 'none'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", default=None, help="one release of every stack (default: each stack's default)")
    parser.add_argument("--markdown", default=None, help="also write the table and the libraries found to FILE")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    parser.add_argument("--wheels", action="store_true", help="also compute each slim cuda target's CUDA from its "
                        "lock's torch and toolkit wheels (no image needed; downloads them)")
    args = parser.parse_args()
    measured = rows(args.release, args.wheels)
    if args.json:
        print(json.dumps([{k: v for k, v in row.items() if k not in ("keys", "all_keys")} for row in measured],
                         indent=1))
        return 0
    text = table(measured)
    print(text)
    if args.markdown:
        details = []
        for row in measured:
            if row.get("libs"):
                libs = row["libs"]
                twice = "; ".join(f"{name}: {', '.join(paths)}" for name, paths in libs["duplicates"].items())
                details.append(f"- **{row['stack']}** ({row['ref']}): {len(libs['libraries'])} CUDA libraries, "
                               f"{gb(libs['bytes'])}; a soname in two or more files: {twice or 'none'}; "
                               f"of them in two versions: {', '.join(libs['versions']) or 'none'}")
        Path(args.markdown).write_text(text + "\n\n" + "\n".join(details) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
