"""Every CUDA library in a filesystem, by soname: the copies a process could load instead of another.

Runs inside an image (standard library only, any Python 3.8+): `python3 cuda_libs.py [ROOT]` walks
ROOT (default /, without /proc, /sys, /dev and the toolkit's link-time stubs), reads the SONAME of
every regular file named like a CUDA library (cudart, cuBLAS, cuDNN, NCCL, cuFFT, cuRAND, cuSOLVER,
cuSPARSE, NVRTC, nvJitLink, CUPTI, NVTX, cuFile, NVSHMEM, nvvm, NPP, nvJPEG...) from its ELF
dynamic section, and prints JSON: each library (path, soname, bytes, sha256), the sonames present
in more than one file with the bytes of those extra files (each soname's files beyond its largest
one), of them the byte-identical copies ("copies", "copy_bytes": a file whose bytes another file
of the soname has), and the sonames whose files differ (two versions of one library). Two versions of a
soname are the case the field notes warn about: which one a process loads depends on the search
path, so torch and an extension can each load their own; byte-identical copies (a wheel that
bundles a library another wheel also ships) cost disk only. Libraries of one name but another
soname (libcublas.so.12 beside libcublas.so.13) are different libraries and are not counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys

CUDA_LIBRARY = re.compile(
    r"^lib(cudart|cublas|cublasLt|cudnn\w*|nccl|cufft|cufftw|curand|cusolver|cusolverMg|cusparse|cusparseLt|"
    r"nvrtc|nvrtc-builtins|nvJitLink|cupti|nvToolsExt|nvtx3interop|cufile|cufile_rdma|nvshmem\w*|nvvm|nvblas|"
    r"npp\w*|nvjpeg|nvperf_host|nvperf_target|pcsamplingutil|checkpoint)(\.alt)?\.so(\.[\d.]+)?$")
SKIP = ("/proc", "/sys", "/dev")


def soname(path: str) -> str | None:
    """DT_SONAME of a 64-bit little-endian ELF shared object, from its section headers; None if none."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return None
            shoff, = struct.unpack_from("<Q", head, 0x28)
            shentsize, shnum = struct.unpack_from("<HH", head, 0x3A)
            handle.seek(shoff)
            table = handle.read(shentsize * shnum)
            sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
            for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
                if kind != 6:  # SHT_DYNAMIC
                    continue
                handle.seek(offset)
                dynamic = handle.read(size)
                strtab = sections[link]
                for i in range(0, len(dynamic), entsize or 16):
                    tag, value = struct.unpack_from("<qQ", dynamic, i)
                    if tag == 14:  # DT_SONAME
                        handle.seek(strtab[4] + value)
                        return handle.read(256).split(b"\0", 1)[0].decode()
                    if tag == 0:
                        break
    except (OSError, struct.error, IndexError, UnicodeDecodeError):
        return None
    return None


def scan(root: str = "/") -> dict:
    libraries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in SKIP and d != "stubs"]
        for name in files:
            path = os.path.join(folder, name)
            if not CUDA_LIBRARY.match(name) or os.path.islink(path) or not os.path.isfile(path):
                continue
            libraries.append({"path": path, "soname": soname(path) or name, "bytes": os.path.getsize(path),
                              "sha256": sha256(path)})
    by_soname: dict[str, list[dict]] = {}
    for library in libraries:
        by_soname.setdefault(library["soname"], []).append(library)
    duplicates = {name: sorted(entry["path"] for entry in copies) for name, copies in sorted(by_soname.items())
                  if len(copies) > 1}
    extra = sum(sum(e["bytes"] for e in by_soname[name]) - max(e["bytes"] for e in by_soname[name])
                for name in duplicates)
    versions = {name: sorted(entry["path"] for entry in by_soname[name]) for name in duplicates
                if len({entry["sha256"] for entry in by_soname[name]}) > 1}
    # byte-identical files of one soname beyond the first: copies (disk only), whatever else the soname has
    copies = {}
    for name in duplicates:
        seen: dict[str, str] = {}
        for entry in sorted(by_soname[name], key=lambda e: e["path"]):
            if entry["sha256"] in seen:
                copies.setdefault(name, []).append(entry["path"])
            seen.setdefault(entry["sha256"], entry["path"])
    copy_bytes = sum(e["bytes"] for name in copies for e in by_soname[name] if e["path"] in copies[name])
    return {"libraries": sorted(libraries, key=lambda e: e["path"]),
            "copies": copies, "copy_bytes": copy_bytes,
            "bytes": sum(e["bytes"] for e in libraries), "duplicates": duplicates, "duplicate_bytes": extra,
            "versions": versions,
            "version_bytes": sum(sum(e["bytes"] for e in by_soname[name]) - max(e["bytes"] for e in by_soname[name])
                                 for name in versions)}


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


if __name__ == "__main__":
    json.dump(scan(sys.argv[1] if len(sys.argv) > 1 else "/"), sys.stdout, indent=1)
    print()
