"""The image's compiled CUDA code, proven without a GPU: archs, library resolution, one CUDA.

Three properties, read from the files alone (no GPU, no driver, no network):

1. Device code. Every extension compiled in the image (the .so files of the manifest's "compiled"
   packages: DeepSpeed's ops, flash_attn_2_cuda) holds cubins for exactly the archs it was built
   for (FLASH_ATTN_CUDA_ARCHS, else TORCH_CUDA_ARCH_LIST, of its build environment; none on a
   target without CUDA): one for each listed arch and none for another. PTX is allowed for the
   highest listed arch (forward compatibility: what torch's and flash-attn's builds embed) and
   for an arch the list marks "+PTX", which must then have it; PTX for any other arch fails. An
   extension with no device code at all is a host-only op (cpu_adam, async_io). Prebuilt CUDA
   code (torch's own libraries, bitsandbytes' library for torch's CUDA, any other .so in
   site-packages with device code) must cover every arch the image is built for: a cubin of the
   same major version at the same or a lower minor, or PTX at or below it. Their extra archs are
   their vendors' choice and not a failure. A target without an arch list (it compiles nothing:
   qlora, alpaca-lora) holds its prebuilt libraries to the archs torch has kernels for, and a gap
   there is a warning.
2. Resolution. Every one of those libraries and torch's own resolves each library it needs, and
   what those need in turn (ldd: no "not found"), the CUDA wheels' libraries that torch loads
   included. Python extensions load after torch, so a library
   torch itself loads (libc10.so, libcudart) counts as found; the driver's (libcuda.so.1,
   libnvidia-ml.so.1) comes from the host and is never looked for.
3. One CUDA. Each CUDA library (libcudart, libcublas, libcudnn, libnccl, ...) resolves to one
   file for torch and every extension: two files of one library (another version, or a second
   copy from a CUDA toolkit beside the wheels) are two CUDA versions one process can load.

The device code is found by parsing each ELF file's section headers, its .nv_fatbin section, and
the fatbinary containers in it (magic 0xBA55ED50): each entry's kind (PTX or cubin), SM arch,
arch variant (a/f) and compression flag. Only headers are read, so large libraries parse fast.
"""

import os
import re
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from _smoke import context, report

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_ELF = 1, 2
FLAG_COMPRESSED = 0x2000 | 0x8000  # LZ-style (CUDA <= 12) and zstd (CUDA 13) payloads
FLAG_ARCH_SPECIFIC = 0x100000  # sm_90a, sm_100a
FLAG_FAMILY_SPECIFIC = 0x200000  # sm_100f
# the CUDA libraries one process must load once: a family is the soname without ".so.N"
CUDA_LIBRARY = re.compile(r"^lib(cudart|cublasLt|cublas|cudnn\w*|nccl|cusparseLt|cusparse|cufftw?|curand|cusolverMg|"
                          r"cusolver|nvrtc(?:-builtins)?|nvJitLink|cupti|nvToolsExt|cufile(?:_rdma)?|nvshmem\w*|"
                          r"npp\w*|nvjpeg|nvblas)\.so(\.|$)")
DRIVER_LIBRARY = re.compile(r"^lib(cuda|nvidia-\w+|nvcuvid|nvoptix)\.so(\.|$)")


class NotElf(Exception):
    pass


class Entry(object):
    def __init__(self, kind, arch, variant, compressed):
        self.kind, self.arch, self.variant, self.compressed = kind, arch, variant, compressed

    @property
    def name(self):
        return "{}_{}{}".format("sm" if self.kind == KIND_ELF else "compute", self.arch, self.variant)


def elf_sections(handle):
    """{section name: (file offset, size)} of a 64-bit little-endian ELF file; NotElf otherwise."""
    head = handle.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF":
        raise NotElf("not an ELF file")
    if head[4] != 2 or head[5] != 1:
        raise NotElf("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", head, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
    if shoff == 0 or shnum == 0 or shentsize < 64 or shstrndx >= shnum:
        return {}
    handle.seek(shoff)
    table = handle.read(shentsize * shnum)
    if len(table) < shentsize * shnum:
        raise NotElf("truncated section header table")
    headers = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
    names_offset, names_size = headers[shstrndx][4], headers[shstrndx][5]
    handle.seek(names_offset)
    names = handle.read(names_size)
    sections = {}
    for name_at, _type, _flags, _addr, offset, size in headers:
        end = names.find(b"\0", name_at)
        sections[names[name_at:end if end >= 0 else len(names)].decode("ascii", "replace")] = (offset, size)
    return sections


def fatbin_entries(path):
    """The device code entries of an ELF shared library ([] without a .nv_fatbin section).

    The section holds fatbinary containers one after another (8-byte aligned): a 16-byte header
    (magic, version, header size, size of what follows) and entries, each a header (kind, header
    size, payload size, ..., SM arch at 28, flags at 40) followed by its payload.
    """
    entries = []
    with open(path, "rb") as handle:
        section = elf_sections(handle).get(".nv_fatbin")
        if not section:
            return entries
        start, size = section
        position, end = start, start + size
        while position + 16 <= end:
            handle.seek(position)
            magic, _version, header_size, body = struct.unpack("<IHHQ", handle.read(16))
            if magic == 0:  # padding between containers
                position += 8
                continue
            if magic != FATBIN_MAGIC or header_size < 16:
                raise ValueError("no fatbinary header at offset {} of .nv_fatbin (magic {:#x})".format(
                    position - start, magic))
            entry, container_end = position + header_size, position + header_size + body
            if container_end > end:
                raise ValueError("a fatbinary container runs past the end of .nv_fatbin")
            while entry + 48 <= container_end:
                handle.seek(entry)
                raw = handle.read(48)
                kind, _unknown, entry_size, payload = struct.unpack_from("<HHIQ", raw, 0)
                arch, = struct.unpack_from("<I", raw, 28)
                flags, = struct.unpack_from("<Q", raw, 40)
                if entry_size < 48 or kind not in (KIND_PTX, KIND_ELF):
                    raise ValueError("a fatbinary entry of kind {} and header size {} at offset {}".format(
                        kind, entry_size, entry - start))
                variant = "a" if flags & FLAG_ARCH_SPECIFIC else "f" if flags & FLAG_FAMILY_SPECIFIC else ""
                entries.append(Entry(kind, arch, variant, bool(flags & FLAG_COMPRESSED)))
                entry += entry_size + payload
            position = container_end + (-(container_end - start) % 8)
    return entries


def parse_arch_list(text):
    """'8.0;8.6;9.0+PTX' or '80;90;100' -> [(80, False), (86, False), (90, True)]."""
    archs = []
    for item in re.split(r"[;, ]+", text.strip()):
        if not item:
            continue
        ptx = item.endswith("+PTX")
        digits = re.sub(r"[^0-9]", "", item.replace("+PTX", "").rstrip("af"))
        if "." in item:
            major, _, minor = item.replace("+PTX", "").partition(".")
            digits = re.sub(r"[^0-9]", "", major) + re.sub(r"[^0-9]", "", minor)[:1]
        if len(digits) >= 2:
            archs.append((int(digits), ptx))
    return archs


def sm(arch):
    return "sm_{}".format(arch)


def exact_problems(entries, wanted):
    """What is wrong with a compiled extension's device code for its arch list (empty: fine)."""
    archs = sorted({arch for arch, _ in wanted})
    cubins = {e.arch for e in entries if e.kind == KIND_ELF}
    ptx = {e.arch for e in entries if e.kind == KIND_PTX}
    allowed_ptx = {arch for arch, with_ptx in wanted if with_ptx} | set(archs[-1:])
    problems = []
    missing = [a for a in archs if a not in cubins]
    if missing:
        problems.append("no cubin for {}".format(" ".join(sm(a) for a in missing)))
    extra = sorted(cubins - set(archs))
    if extra:
        problems.append("cubins for {} too, not in the list".format(" ".join(sm(a) for a in extra)))
    stray = sorted(ptx - allowed_ptx)
    if stray:
        problems.append("PTX for {} (allowed only for the highest arch{})".format(
            " ".join("compute_{}".format(a) for a in stray), " and those marked +PTX" if len(allowed_ptx) > 1 else ""))
    absent = [a for a, with_ptx in wanted if with_ptx and a not in ptx]
    if absent:
        problems.append("no PTX for {} although the list asks for it (+PTX)".format(
            " ".join("compute_{}".format(a) for a in absent)))
    return problems


def runs_on(entries, arch):
    """A cubin of the same major at the same or a lower minor (an a/f variant: only its own arch or family),
    or PTX at or below it, runs on an sm_<arch> GPU."""
    for e in entries:
        if e.kind == KIND_ELF and e.arch // 10 == arch // 10 and e.arch <= arch and \
                (e.variant == "" or e.arch == arch or e.variant == "f"):
            return True
        if e.kind == KIND_PTX and e.variant == "" and e.arch <= arch:
            return True
    return False


def summary(entries):
    names = sorted({e.name for e in entries}, key=lambda n: (int(re.sub(r"\D", "", n)), n))
    compressed = sum(e.compressed for e in entries)
    return "{}{}".format(" ".join(names), ", {} of {} compressed".format(compressed, len(entries)) if compressed else "")


def site_dirs():
    """The folders on sys.path that packages are installed into (site-packages, dist-packages)."""
    found = []
    for entry in sys.path:
        real = os.path.realpath(entry or ".")
        if os.path.basename(real) in ("site-packages", "dist-packages") and os.path.isdir(real) and real not in found:
            found.append(real)
    return found


def is_library(name):
    return name.endswith(".so") or ".so." in name


def walk_libraries(roots):
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if is_library(name):
                    path = os.path.join(folder, name)
                    if os.path.isfile(path) and not os.path.islink(path):
                        yield path


def distribution_libraries(name):
    """The shared libraries a distribution installed (its RECORD), or None when it is not installed."""
    from importlib import metadata
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    return sorted({os.path.realpath(str(dist.locate_file(f))) for f in dist.files or () if is_library(f.name)})


def package_dir(name, roots):
    for root in roots:
        if os.path.isfile(os.path.join(root, name, "__init__.py")):
            return os.path.join(root, name)
    return None


def torch_cuda_version(torch_dir):
    """torch.version.cuda, read from torch/version.py without importing torch ('' for a CPU build)."""
    try:
        with open(os.path.join(torch_dir, "version.py"), encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return ""
    match = re.search(r"^cuda\b[^=\n]*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else ""


def ldd(path):
    """{needed soname: resolved real path or None} as the dynamic loader resolves it here."""
    try:
        proc = subprocess.run(["ldd", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=60)
    except OSError as exc:
        raise RuntimeError("cannot run ldd ({}): install libc-bin".format(exc))
    resolved = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"\s*(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$", line)
        if not match:
            continue
        soname, target = match.groups()
        resolved[soname] = None if target.strip() == "not found" else os.path.realpath(target.strip())
    return resolved


def main():
    check, manifest = context()
    accelerator = manifest.get("accelerator")
    roots = site_dirs()
    problems, warnings, facts = [], [], []

    # --- what each library is: compiled here (exact arch list), prebuilt (coverage), or only resolved
    compiled = {}  # path -> (package, arch list)
    for step in manifest.get("compiled") or []:
        env = step.get("env") or {}
        text = env.get("FLASH_ATTN_CUDA_ARCHS") or env.get("TORCH_CUDA_ARCH_LIST") or ""
        wanted = parse_arch_list(text) if accelerator == "cuda" else []
        libraries = distribution_libraries(step["package"])
        if libraries is None:
            problems.append("{} is not installed (rebuild the image: it compiles {} {})".format(
                step["package"], step["package"], step.get("version")))
            continue
        for path in libraries:
            compiled[path] = (step["package"], wanted, text if accelerator == "cuda" else "")
    torch_dir = package_dir("torch", roots)
    cuda = torch_cuda_version(torch_dir) if torch_dir else ""
    torch_libs = sorted(walk_libraries([os.path.join(torch_dir, "lib")])) if torch_dir else []
    prebuilt = []
    bnb_dir = package_dir("bitsandbytes", roots)
    if bnb_dir and cuda:
        number = os.environ.get("BNB_CUDA_VERSION") or "".join(cuda.split(".")[:2])
        prebuilt += [os.path.realpath(os.path.join(bnb_dir, n)) for n in (
            "libbitsandbytes_cuda{}.so".format(number), "libbitsandbytes_cuda{}_nocublaslt.so".format(number))
            if os.path.isfile(os.path.join(bnb_dir, n))]
    skip_dirs = tuple(os.path.realpath(d) + os.sep for d in
                      [torch_dir, bnb_dir] + [os.path.join(r, "nvidia") for r in roots] +
                      [os.path.join(r, "triton") for r in roots] if d)

    device = {}  # path -> its device code entries ([]: none); not there: not an ELF file

    def parse(path):
        try:
            return path, fatbin_entries(path), None
        except NotElf as exc:
            return path, None, str(exc) if path in compiled else None
        except (OSError, ValueError, struct.error) as exc:
            return path, None, "{}: {}".format(type(exc).__name__, exc)

    candidates = sorted(compiled)
    if accelerator == "cuda":  # prebuilt device code anywhere, torch's own included
        candidates += [p for p in sorted(set(walk_libraries(roots)) - set(torch_libs)) if p in prebuilt or
                       (p not in compiled and not p.startswith(skip_dirs))] + torch_libs
    with ThreadPoolExecutor(4) as pool:
        for path, entries, error in pool.map(parse, candidates):
            if error:
                problems.append("cannot read the device code of {}: {} (reinstall the package that ships it)".format(
                    path, error))
            elif entries is not None:
                device[path] = entries

    # --- 1. device code
    host_only = []
    for path, (package, wanted, text) in sorted(compiled.items()):
        entries = device.get(path)
        if entries is None:
            continue
        short = os.path.relpath(path, os.path.dirname(os.path.dirname(path)))
        if not entries:
            host_only.append(os.path.basename(path))
            continue
        if not wanted:
            problems.append("{} holds device code ({}) but the {} target compiles for no GPU (rebuild {} without "
                            "CUDA for this target)".format(short, summary(entries), manifest.get("target"), package))
            continue
        wrong = exact_problems(entries, wanted)
        if wrong:
            problems.append("{} ({}) holds {}: {} (rebuild {} with the profile's arch list {})".format(
                short, package, summary(entries), "; ".join(wrong), package, text))
    extensions = sorted(p for p in compiled if device.get(p))
    if extensions:
        facts.append("{} compiled extension(s) hold device code for exactly their arch list ({})".format(
            len(extensions), "; ".join(sorted({"{}: {}".format(compiled[p][0], compiled[p][2]) for p in extensions}))))
    if host_only:
        facts.append("{} host-only".format(len(host_only)))

    reference = sorted({arch for p in compiled for arch, _ in compiled[p][1]})
    listed = bool(reference)  # the target's arch list; without one, the GPUs torch has kernels for
    # what torch was built for: libtorch_cuda.so's kernels (its other libraries add third-party code, such as
    # MAGMA's sm_50/sm_60 in libtorch_cuda_linalg.so, for archs torch itself has no kernels for)
    core = [p for p in torch_libs if os.path.basename(p) == "libtorch_cuda.so"] or torch_libs
    torch_device = [e for p in core for e in device.get(p) or []]
    if not listed and accelerator == "cuda":
        reference = sorted({e.arch for e in torch_device if e.kind == KIND_ELF and not e.variant})
    if accelerator == "cuda" and cuda and reference:
        vendor = {"torch ({})".format(", ".join(sorted({os.path.basename(p) for p in core if device.get(p)}))):
                  torch_device} if listed else {}
        for path in sorted(set(device) - set(compiled) - set(torch_libs)):
            if device[path]:
                vendor[os.path.basename(path)] = device[path]
        for path in prebuilt:
            if not device.get(path):
                problems.append("{} holds no device code (install the release's bitsandbytes pin)".format(path))
        for name, entries in sorted(vendor.items()):
            missing = [a for a in reference if not runs_on(entries, a)]
            if missing and listed:
                problems.append("{} has no device code for {} (holds {}) (use a build of it for these GPUs, or "
                                "remove them from the target's arch_list)".format(
                                    name, " ".join(sm(a) for a in missing), summary(entries) or "none"))
            elif missing:
                # the target names no archs: a gap is a fact about the vendor's build, not a broken image
                warnings.append("{} has no device code for {}, which torch has kernels for: it fails on those "
                                "GPUs (holds {}; give the cuda target an arch_list to require its GPUs)".format(
                                    name, " ".join(sm(a) for a in missing), summary(entries)))
        if vendor:
            facts.append("prebuilt CUDA code {} {} ({})".format(
                "covers the arch list" if listed else "checked against torch's archs",
                " ".join(sm(a) for a in reference), ", ".join(sorted(vendor))))
    elif accelerator == "cuda" and not cuda:
        problems.append("torch is {} on the cuda target (install torch from the release's CUDA index)".format(
            "missing" if not torch_dir else "a CPU build"))

    # --- 2. every library resolves; 3. one file per CUDA library
    # ldd lists what each needs, and what those need in turn: the CUDA wheels' libraries that torch loads
    # are checked through torch (their optional plugins - nvshmem's transports, cufile's RDMA - are not)
    in_scope = sorted(set(torch_libs) | set(compiled) | set(prebuilt) |
                      {p for p in device if device[p]})
    with ThreadPoolExecutor(4) as pool:
        resolved = dict(zip(in_scope, pool.map(ldd, in_scope)))
    from_torch = {}  # soname -> file, for what torch's libraries load
    for path in torch_libs:
        from_torch[os.path.basename(path)] = os.path.realpath(path)
        for soname, target in resolved[path].items():
            if target:
                from_torch.setdefault(soname, target)
    unresolved, users = [], {}
    for path in in_scope:
        for soname, target in sorted(resolved[path].items()):
            if DRIVER_LIBRARY.match(soname):
                continue
            if target is None:
                target = from_torch.get(soname) if path not in torch_libs else None
                if target is None:
                    unresolved.append("{} needs {}".format(os.path.basename(path), soname))
                    continue
            family = CUDA_LIBRARY.match(soname)
            if family:
                users.setdefault(family.group(1), {}).setdefault(target, []).append(os.path.basename(path))
    if unresolved:
        problems.append("ldd finds no file for: {} (install the library, or rebuild what needs it against the "
                        "image's own libraries)".format("; ".join(unresolved)))
    for family, files in sorted(users.items()):
        if len(files) > 1:
            problems.append("lib{} resolves to {} files: {} (two CUDA versions in one process: build every "
                            "extension against the CUDA libraries torch loads - one CUDA per image)".format(
                                family, len(files), "; ".join("{} for {}".format(f, ", ".join(sorted(set(u))[:3]))
                                                              for f, u in sorted(files.items()))))
    facts.append("{} libraries resolve every dependency".format(len(in_scope)))
    if users:
        facts.append("one file each for {}".format(" ".join("lib" + f for f in sorted(users))))
    if problems:
        report("fail", "; ".join(problems + warnings))
    if warnings:
        report("warn", "; ".join(warnings + facts))
    report("pass", "; ".join(facts))


if __name__ == "__main__":
    main()
