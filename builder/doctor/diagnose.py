"""doctor: recognise known failures in logs, and check a host or a model folder before training.

Three library entry points, each a plain function the CLI calls and prints:

- ``diagnose(text)`` / ``diagnose_file(path or '-')``: match the knowledge base
  (stacks/known-issues.yaml) against a build or training log and return ``Diagnosis`` objects,
  best first.
- ``check_host(stack)``: Docker engine, NVIDIA runtime, driver, GPUs, /dev/shm, RAM and disk,
  each a ``HostCheck`` that says ok, warn, fail, or unknown (with why it could not be checked).
- ``check_model(directory)``: weight shards against available RAM, and the tokenizer's special
  tokens (the decapoda LLaMA conversion).

Nothing here imports ``docker`` (only builder/engine/classic.py may) or ``transformers``.

How a log is matched (``builder/doctor/logs.py``). The log streams through in chunks of lines; terminal
control sequences are stripped and CRLF becomes LF. Every knowledge-base pattern carries a fixed
piece of text (checked at load, see ``knowledge.compile_log_pattern``); doctor finds each
occurrence of that text with ``str.find`` and runs the pattern once per line (at most
``MAX_LINE_CHARS`` characters around it; a line overwritten after a carriage return is also tried
segment by segment). The work is linear in the log's size, memory does not grow with it, and the
load-time checks keep each regex free of constructs that backtrack catastrophically. The whole
log is scanned, because the decisive line is often far above the final traceback.

Confidence of a diagnosis (0..1), so the ranking can be explained:

- 0.6 for an entry whose lines identify the failure, 0.3 for a ``generic`` entry (its lines are
  downstream symptoms that more specific entries explain, e.g. a bare CUDA OOM);
- +0.2 when the entry needs context (a generic line such as ``No module named 'torch'``) and it was
  found within ``context_window`` lines before or after the hit: the line plus its context is the
  most specific evidence there is;
- +0.05 for each further distinct pattern of the entry that matched, at most +0.1;
- when a stack is given: +0.1 if the entry names that stack, -0.1 if it names neither it nor 'any'.

The result is clamped to [0.05, 1.0]. Diagnoses are sorted by confidence, then by the earliest
matching line, then by id.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from . import logs as logscan
from ..profile import targets
from ..profile.versions import version_tuple
from ..errors import DoctorError, EngineUnavailable
from ..profile.knowledge import KnownIssue, load_knowledge_base
from .logs import EXCERPT_AFTER, EXCERPT_BEFORE
from ..safety.printable import printable
from .model import json_file, shard_problem
from ..safety.files import open_regular

Status = Literal["ok", "warn", "fail", "unknown"]

GIB = 1024 ** 3
SHM_MIN = 1 * GIB
RAM_MIN = 16 * GIB


# --------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnosis:
    """One known issue recognised in a log.

    ``first_line`` and ``lines`` are 1-based line numbers of the lines that matched the entry's
    patterns (``lines`` is capped at 20); ``excerpt`` holds (line number, text) pairs around the
    first match; ``fix`` is the fix for the given stack@release when the entry has one, else the
    general fix; ``matched`` lists the patterns that matched.
    """

    issue: KnownIssue
    confidence: float
    first_line: int
    lines: tuple[int, ...]
    excerpt: tuple[tuple[int, str], ...]
    fix: str
    matched: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain data for ``doctor --json``."""
        return {
            "id": self.issue.id, "title": self.issue.title, "confidence": self.confidence,
            "first_line": self.first_line, "lines": list(self.lines),
            "excerpt": [{"line": n, "text": t} for n, t in self.excerpt],
            "cause": self.issue.cause, "fix": self.fix, "fixed_in": self.issue.fixed_in,
            "references": list(self.issue.references), "matched": list(self.matched),
        }


def strip_ansi(text: str) -> str:
    """Remove terminal control sequences (colours, cursor moves, titles; 7- and 8-bit) and control characters."""
    return logscan.clean(text)


def diagnose(text: str, stack: str | None = None, release: str | None = None,
             knowledge: Mapping[str, KnownIssue] | None = None) -> list[Diagnosis]:
    """Known issues found in a log, best first (see the module docstring for the ranking rule).

    ``stack`` and ``release`` (a release name such as ``2023.06``; the CLI resolves the default
    release) choose the era fix and favour entries of that stack. ``knowledge`` defaults to the
    shipped knowledge base. An empty list means nothing known was recognised.
    """
    return _diagnose_chunks(lambda: logscan.line_chunks([text]), stack, release, knowledge)


def _diagnose_chunks(source: Callable[[], Iterator[str]], stack: str | None, release: str | None,
                     knowledge: Mapping[str, KnownIssue] | None) -> list[Diagnosis]:
    """Two streaming passes over ``source()``: the scan, then the excerpts of the lines found."""
    kb = knowledge if knowledge is not None else load_knowledge_base()
    scanner = logscan.LogScanner(kb.values())
    for chunk in source():
        scanner.feed(chunk)
    results = scanner.results()
    if not results:
        return []
    around = {first: range(max(1, first - EXCERPT_BEFORE), first + EXCERPT_AFTER + 1)
              for first in {lines[0] for _, lines, _ in results}}
    texts = logscan.excerpts(source(), {n for lines in around.values() for n in lines})
    found: list[Diagnosis] = []
    for issue, lines, matched in results:
        first = lines[0]
        found.append(Diagnosis(
            issue=issue, confidence=_confidence(issue, len(matched), stack), first_line=first, lines=lines,
            excerpt=tuple((n, texts[n]) for n in around[first] if n in texts), fix=issue.fix_for(stack, release),
            matched=tuple(p.source for p in matched),
        ))
    found.sort(key=lambda d: (-d.confidence, d.first_line, d.issue.id))
    return found


def _confidence(issue: KnownIssue, distinct: int, stack: str | None) -> float:
    score = 0.3 if issue.generic else 0.6
    if issue.context:
        score += 0.2
    score += min(0.1, 0.05 * max(0, distinct - 1))
    if stack:
        if stack in issue.stacks:
            score += 0.1
        elif "any" not in issue.stacks:
            score -= 0.1
    return round(min(1.0, max(0.05, score)), 2)


def diagnosis_lines(diagnoses: list[Diagnosis], most: int = 2) -> tuple[str, ...]:
    """The best diagnoses as short lines for an error message (a failed build or smoke test)."""
    out: list[str] = []
    for item in diagnoses[:most]:
        out.append(f"doctor: {item.issue.id} (line {item.first_line} of the log): {item.issue.title}")
        out.append(f"  fix: {item.fix}")
    return tuple(out)


def _blocks(handle: BinaryIO) -> Iterator[bytes]:
    handle.seek(0)
    while block := handle.read(logscan.READ_BYTES):
        yield block


def diagnose_file(path_or_dash: str | Path, stack: str | None = None, release: str | None = None,
                  knowledge: Mapping[str, KnownIssue] | None = None) -> list[Diagnosis]:
    """``diagnose`` of a log file, or of standard input when given '-', read as a stream.

    Memory does not grow with the log: it is read in blocks, twice (standard input is spooled to
    a temporary file first). A log that is not a regular file, cannot be read or is binary is a
    DoctorError; UTF-8 and UTF-16 (with or without a byte-order mark) are read.
    """
    name = str(path_or_dash)
    with ExitStack() as stack_of_files:
        if name == "-":
            shown = "standard input"
            handle: BinaryIO = stack_of_files.enter_context(tempfile.TemporaryFile())
            shutil.copyfileobj(sys.stdin.buffer, handle, logscan.READ_BYTES)
        else:
            shown = printable(name)
            path = Path(name)
            if not path.exists() and not path.is_symlink():
                raise DoctorError(f"log file not found: {shown} (check the path, or pass - to read the log from "
                                  "standard input)")
            if path.is_dir():
                raise DoctorError(f"{shown} is a directory, not a log file (pass the log file itself; for a model "
                                  "folder use --model)")
            try:
                handle = stack_of_files.enter_context(os.fdopen(open_regular(path), "rb"))
            except OSError as exc:
                raise DoctorError(f"cannot read {shown}: {exc.strerror or exc} (pass a regular log file, or - "
                                  "for standard input)") from None
        try:
            return _diagnose_chunks(lambda: logscan.line_chunks(logscan.decode_blocks(_blocks(handle))),
                                    stack, release, knowledge)
        except logscan.UnreadableLog as exc:
            raise DoctorError(f"{shown} {exc}; doctor reads text logs (pass the build or training output, e.g. the "
                              "log file a failed build names; decompress .gz logs first)") from None
        except OSError as exc:
            raise DoctorError(f"cannot read {shown}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# Host
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostCheck:
    """One host or model check: ok, warn, fail, or unknown (``detail`` says why it could not run)."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class EngineInfo:
    """What doctor needs from the Docker engine."""

    version: str
    address: str
    runtimes: tuple[str, ...]
    root_dir: str | None = None


def run_host_tool(args: list[str], tool: str) -> str:
    """Run the accelerator's host tool (nvidia-smi) with ``args``; FileNotFoundError when it is not installed."""
    exe = shutil.which(tool)
    if exe is None:
        raise FileNotFoundError(tool)
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise RuntimeError((done.stderr or done.stdout).strip() or f"exit code {done.returncode}")
    return done.stdout


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: str
    driver: str


def check_host(stack=None, release: str | None = None, target: str | None = None, *,
               engine_probe: Callable[[], EngineInfo] | None = None,
               nvidia_smi: Callable[[list[str]], str] | None = None,
               meminfo_path: str | Path = "/proc/meminfo", shm_path: str | Path = "/dev/shm",
               disk_path: str | Path | None = None, sys_path: str | Path = "/sys",
               ip_addr: Callable[[], str] | None = None) -> list[HostCheck]:
    """Check this host for building and running ``stack`` (a loaded ``Stack``, or None for generic checks).

    ``release`` defaults to the stack's default release and ``target`` to cuda when the host has an
    NVIDIA GPU, else cpu. Every check either runs or reports ``unknown`` with the reason, so this
    works on a host with no GPU and no engine. ``engine_probe`` asks the engine for its host info
    (the caller's: doctor never imports an engine; none given, the engine checks say unknown);
    ``nvidia_smi`` (the host tool given its arguments) is injectable for tests (default: ``run_host_tool``).
    """
    def unasked() -> EngineInfo:
        raise EngineUnavailable("no engine was asked (check_host got no engine_probe)")

    probe = engine_probe if engine_probe is not None else unasked
    rel = stack.release(release) if stack is not None else None
    checks: list[HostCheck] = []

    engine: EngineInfo | None = None
    try:
        engine = probe()
        checks.append(HostCheck("engine", "ok", f"Docker {engine.version} at {engine.address}"))
    except EngineUnavailable as exc:
        checks.append(HostCheck("engine", "fail", str(exc).splitlines()[0],
                                "start Docker (or set DOCKER_HOST) to build and run images"))

    gpus: list[Gpu] | None = None
    gpu_error = ""
    accelerator = targets.host_accelerator(target)  # the host commands and runtime come from its entry
    tool = accelerator.host_tool[0]
    smi = nvidia_smi if nvidia_smi is not None else (lambda args: run_host_tool(args, tool))
    try:
        gpus = _parse_gpus(smi(list(accelerator.host_tool[1:])))
    except FileNotFoundError:
        gpu_error = f"{tool} not found: no {accelerator.vendor} driver on this host"
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        gpu_error = f"{tool} failed: {exc}"
    if target is None:
        target = targets.for_host(bool(gpus))

    checks.append(_runtime_check(engine, target, accelerator))
    checks.append(_driver_check(gpus, gpu_error, rel, accelerator))
    checks.extend(_gpu_checks(gpus, gpu_error, rel))
    checks.append(_shm_check(Path(shm_path)))
    meminfo = _read_meminfo(Path(meminfo_path))
    checks.append(_ram_check(meminfo, meminfo_path))
    checks.append(_disk_check(engine, disk_path, target))
    checks.append(_rdma_check(Path(sys_path), target))
    checks.append(_network_check(Path(sys_path), ip_addr if ip_addr is not None else run_ip_addr))
    return checks


def _read_sys(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _rdma_check(sys_path: Path, target: str) -> HostCheck:
    """The RDMA devices NCCL could use between nodes (/sys/class/infiniband: InfiniBand or RoCE)."""
    folder = sys_path / "class" / "infiniband"
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError:
        names = []
    if not names:
        status: Status = "warn" if targets.runs_on_gpu(target) else "ok"
        return HostCheck("rdma", status, f"no RDMA devices ({folder} is empty or absent): between nodes NCCL uses TCP "
                         "sockets, gloo always does",
                         "on an InfiniBand/RoCE cluster load the RDMA drivers (mlx5_ib) and pass /dev/infiniband "
                         "into the container" if status == "warn" else "")
    described = []
    active = 0
    for name in names:
        ports = []
        try:
            port_dirs = sorted((folder / name / "ports").iterdir())
        except OSError:
            port_dirs = []
        for port in port_dirs:
            layer = _read_sys(port / "link_layer") or "?"
            state = _read_sys(port / "state").split(":")[-1].strip() or "?"
            active += state == "ACTIVE"
            ports.append(f"port {port.name} {layer} {state}")
        described.append(f"{name} ({', '.join(ports) or 'no ports'})")
    if not active:
        return HostCheck("rdma", "warn", "RDMA devices without an active port: " + "; ".join(described),
                         "check the cabling and the subnet manager (ibstat); NCCL falls back to TCP sockets")
    return HostCheck("rdma", "ok", "; ".join(described) + ": NCCL can use them when the container gets "
                     "/dev/infiniband (docker run --device /dev/infiniband --cap-add IPC_LOCK)")


def run_ip_addr() -> str:
    """`ip -o addr show`: one line per address (empty when iproute2 is missing or fails)."""
    try:
        return subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _network_check(sys_path: Path, ip_addr: Callable[[], str]) -> HostCheck:
    """The interfaces a multi-node job could use (NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME), with addresses."""
    folder = sys_path / "class" / "net"
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError:
        return HostCheck("network", "unknown", f"{folder} cannot be read, so the network interfaces are unknown")
    addresses: dict[str, list[str]] = {}
    for line in ip_addr().splitlines():
        words = line.split()
        if len(words) >= 4 and words[2] in ("inet", "inet6"):
            addresses.setdefault(words[1], []).append(words[3])
    usable, described = [], []
    for name in names:
        if name == "lo":
            continue
        state = _read_sys(folder / name / "operstate") or "?"
        mtu = _read_sys(folder / name / "mtu")
        ips = [a for a in addresses.get(name, []) if not a.startswith("fe80")]
        if state in ("up", "unknown") and ips:
            usable.append(name)
        described.append(f"{name} {' '.join(ips) or 'no address'} ({state}{', mtu ' + mtu if mtu else ''})")
    if not usable:
        return HostCheck("network", "warn", "no interface besides loopback is up with an address: " +
                         ("; ".join(described) or "none"),
                         "a multi-node job needs an interface the other nodes reach")
    return HostCheck("network", "ok", "; ".join(described) + f": NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME "
                     f"(stackbuild launch --interface) would be {usable[0]} here")


def _parse_gpus(output: str) -> list[Gpu]:
    gpus = []
    for line in output.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0]:
            gpus.append(Gpu(parts[0], parts[1], parts[2]))
    return gpus


def _runtime_check(engine: EngineInfo | None, target: str, accelerator) -> HostCheck:
    """The container runtime ``accelerator``'s entry names (host_runtime) is registered with the engine."""
    runtime = accelerator.host_runtime
    name = f"{runtime}-runtime"
    if engine is None:
        return HostCheck(name, "unknown", "no Docker engine answered, so its runtimes are unknown")
    if runtime in engine.runtimes:
        return HostCheck(name, "ok", f"runtimes: {', '.join(engine.runtimes)}")
    status: Status = "warn" if targets.runs_on_gpu(target) else "ok"
    return HostCheck(name, status,
                     f"no '{runtime}' runtime registered (runtimes: {', '.join(engine.runtimes) or 'none'}); "
                     f"GPU containers (--gpus) need the {accelerator.host_runtime_needs}",
                     accelerator.host_runtime_fix if status == "warn" else "")


def _driver_check(gpus: list[Gpu] | None, gpu_error: str, rel, accelerator) -> HostCheck:
    """The host's driver against the minimum the accelerator's entry gives for the release's version."""
    if gpus is None:
        return HostCheck("driver", "unknown", f"{gpu_error} (GPU checks skipped; the cpu target still works)")
    vendor, label = accelerator.vendor, accelerator.label
    if not gpus:
        return HostCheck("driver", "unknown", f"{accelerator.host_tool[0]} lists no GPU")
    driver = gpus[0].driver
    version = rel.accelerator_versions.get(accelerator.version_field) if rel is not None else None
    if version is None:
        return HostCheck("driver", "ok", f"{vendor} driver {driver} (no stack given: no {label} minimum to compare)")
    need = accelerator.min_driver.get(version)
    major = version.split(".")[0]
    have = version_tuple(driver)
    if need is None:
        floor = accelerator.driver_floor.get(major)
        if floor is not None and have < version_tuple(floor):
            return HostCheck("driver", "fail", f"{vendor} driver {driver} is too old for {label} {version}: every "
                             f"{label} {major}.x needs {floor} or newer (its minor-version compatibility floor)",
                             f"update the {vendor} driver to {floor} or newer, or choose a release built for an "
                             f"older {label}")
        return HostCheck("driver", "unknown", f"{vendor} driver {driver}; no minimum known for {label} {version}"
                         + (f" (it is within {label} {major}.x minor-version compatibility, >= {floor}: built code "
                            "runs, PTX JIT and the newest features may not)" if floor is not None else ""))
    floor = accelerator.driver_floor.get(major, need)
    where = f"minimum per {vendor}'s {label} toolkit release notes"
    if have >= version_tuple(need):
        return HostCheck("driver", "ok", f"{vendor} driver {driver} >= {need}, the {label} {version} {where}")
    fix = f"update the {vendor} driver to {need} or newer, or choose a release built for an older {label}"
    if have >= version_tuple(floor):
        return HostCheck("driver", "warn", f"{vendor} driver {driver} is below {need} ({where} for {label} {version}) "
                         f"but within {label} {major}.x minor-version compatibility (>= {floor}); "
                         "PTX JIT and some newer features will fail", fix)
    return HostCheck("driver", "fail", f"{vendor} driver {driver} is too old for {label} {version} (needs {need}, "
                     f"{where})", fix)


def _flash_attn_major(rel) -> int | None:
    if rel is None:
        return None
    for pkg in rel.compiled:
        if pkg.pin.name.replace("_", "-") == "flash-attn" and pkg.pin.version:
            return int(pkg.pin.version.split(".")[0])
    return None


def _gpu_checks(gpus: list[Gpu] | None, gpu_error: str, rel) -> list[HostCheck]:
    if not gpus:
        return [HostCheck("gpu", "unknown", gpu_error or "nvidia-smi lists no GPU")]
    arch_list = next((t.arch_list for t in rel.targets.values() if t.arch_list), ()) if rel is not None else ()
    fa_major = _flash_attn_major(rel)
    checks = []
    for index, gpu in enumerate(gpus):
        name = f"gpu{index}"
        cap = version_tuple(gpu.capability)
        label = f"{gpu.name}, compute capability {gpu.capability}"
        if fa_major is not None and fa_major >= 2 and cap < (8, 0):
            checks.append(HostCheck(name, "fail", f"{label}: flash-attn {fa_major} needs sm80 or newer",
                                    "use the xformers option (--with xformers) or an Ampere/Hopper GPU"))
        elif fa_major == 1 and cap < (8, 0):
            checks.append(HostCheck(name, "fail", f"{label}: flash-attn 1.x needs sm75/sm80 or newer, and sm80/sm90 "
                                    "for training LLaMA", "use an A100/H100 or the xformers option"))
        elif fa_major == 1 and cap not in ((8, 0), (9, 0)):
            checks.append(HostCheck(name, "warn", f"{label}: flash-attn 1.x backward with head_dim > 64 (every LLaMA) "
                                    "runs only on sm80/sm90", "use a release with flash-attn 2, or an A100/H100"))
        elif arch_list and not any(version_tuple(a) == cap for a in arch_list) and \
                not any(version_tuple(a)[0] == cap[0] and version_tuple(a) <= cap for a in arch_list):
            checks.append(HostCheck(name, "warn", f"{label}: not in the release's arch list ({', '.join(arch_list)}); "
                                    "compiled extensions may have no kernel for it",
                                    "add it to the target's arch_list in the profile"))
        else:
            checks.append(HostCheck(name, "ok", label))
    return checks


def _shm_check(path: Path) -> HostCheck:
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return HostCheck("shm", "unknown", f"cannot stat {path}: {exc.strerror or exc}")
    size = st.f_blocks * st.f_frsize
    if size < SHM_MIN:
        return HostCheck("shm", "warn", f"{path} is {size / GIB:.2f} GiB (< 1 GiB): NCCL and DataLoader workers "
                         "fail with shared-memory errors (nccl-shm)",
                         "inside containers pass --shm-size=16g or --ipc=host (stackbuild run does)")
    return HostCheck("shm", "ok", f"{path} is {size / GIB:.1f} GiB")


def _read_meminfo(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key.strip()] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    except OSError:
        return {}
    return values


def _ram_check(meminfo: dict[str, int], path) -> HostCheck:
    total, available = meminfo.get("MemTotal"), meminfo.get("MemAvailable")
    if total is None or available is None:
        return HostCheck("ram", "unknown", f"cannot read MemTotal/MemAvailable from {path}")
    detail = f"{total / GIB:.1f} GiB total, {available / GIB:.1f} GiB available"
    if total < RAM_MIN:
        return HostCheck("ram", "warn", f"{detail}: loading 7B-class checkpoints needs more (host-oom-killed)",
                         "load with low_cpu_mem_usage=True and small shards, or use a larger host")
    return HostCheck("ram", "ok", detail)


def _disk_check(engine: EngineInfo | None, disk_path, target: str) -> HostCheck:
    path = Path(disk_path) if disk_path else None
    if path is None and engine is not None and engine.root_dir and Path(engine.root_dir).exists():
        path = Path(engine.root_dir)
    path = path or Path("/")
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return HostCheck("disk", "unknown", f"cannot read free space of {path}: {exc.strerror or exc}")
    need = targets.entry_or_default(target).image_size
    detail = f"{free / GIB:.1f} GiB free at {path}; a {target} image needs about {need / GIB:.0f} GiB"
    if free < need:
        return HostCheck("disk", "fail", detail, "free space (docker system prune, docker builder prune) or move "
                         "Docker's data-root to a larger disk")
    return HostCheck("disk", "ok", detail)


# --------------------------------------------------------------------------------------------
# Model folders
# --------------------------------------------------------------------------------------------

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
NOT_WEIGHTS = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
LFS_POINTER = b"version https://git-lfs"
LLAMA_VOCAB = 32000


def check_model(directory: str | Path, *, meminfo_path: str | Path = "/proc/meminfo") -> list[HostCheck]:
    """Check a Hugging Face model folder before training, without loading it.

    Weights: the largest shard against MemAvailable (a process loading it needs roughly twice the
    shard at peak; the kernel then kills it with a bare ``Killed``), shards the index lists but the
    folder lacks, and Git LFS pointer files. Tokenizer: the decapoda-research LLaMA conversion
    (tokenizer_class LLaMATokenizer, bos/eos not 1/2). Reads only file sizes and JSON.
    """
    root = Path(directory)
    if not root.exists():
        raise DoctorError(f"model folder not found: {printable(str(root))} (pass the directory that holds config.json and the "
                          "weight files)")
    if not root.is_dir():
        raise DoctorError(f"{printable(str(root))} is not a directory (pass the model folder, not a single file)")
    try:
        checks = _weight_checks(root, _read_meminfo(Path(meminfo_path)), meminfo_path)
        checks.append(_tokenizer_check(root))
    except OSError as exc:  # the folder itself cannot be listed
        raise DoctorError(f"cannot read the model folder {printable(str(root))}: {exc.strerror or exc}") from None
    return checks


def _load_json(path: Path) -> dict | None:
    return json_file(path)[0]


def _corrupt_json_checks(root: Path) -> list[HostCheck]:
    """A config, tokenizer config or index that exists but cannot be read as a JSON object."""
    checks = []
    for name in ("config.json", "tokenizer_config.json", "special_tokens_map.json", *INDEX_FILES):
        problem = json_file(root / name)[1]
        if problem:
            checks.append(HostCheck("model-files", "fail", f"{name} {printable(problem)}",
                                    "download it again (huggingface-cli download) or restore it from the checkpoint"))
    return checks


def _weight_checks(root: Path, meminfo: dict[str, int], meminfo_path) -> list[HostCheck]:
    files = sorted(p for p in root.iterdir()
                   if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) and p.name not in NOT_WEIGHTS)
    checks: list[HostCheck] = _corrupt_json_checks(root)
    listed: set[str] = set()
    for name in INDEX_FILES:
        index = _load_json(root / name)
        if index and isinstance(index.get("weight_map"), dict):
            listed |= {str(v) for v in index["weight_map"].values()}
    # an index is data from the download: a shard name is a plain file name, shown escaped
    missing = sorted(printable(n) for n in listed
                     if "/" in n or "\x00" in n or n in ("", ".", "..") or not (root / n).is_file())
    if missing:
        checks.append(HostCheck("weights", "fail", f"the index lists {len(missing)} shard(s) the folder lacks: "
                                f"{', '.join(missing[:5])}", "download the missing files (huggingface-cli download)"))
    pointers = [p.name for p in files if p.stat().st_size < 1024 and _head(p, len(LFS_POINTER)) == LFS_POINTER]
    corrupt = [(p.name, problem) for p in files if p.name not in pointers and (problem := shard_problem(p))]
    if corrupt:
        checks.append(HostCheck("weights", "fail", f"{len(corrupt)} weight file(s) are not valid shards: "
                                + "; ".join(f"{printable(n)} {why}" for n, why in corrupt[:5]),
                                "download them again (huggingface-cli download); compare their sha256 with the hub's"))
    if pointers:
        checks.append(HostCheck("weights", "fail", f"{len(pointers)} weight file(s) are Git LFS pointers, not weights: "
                                f"{', '.join(pointers[:5])} (weights-lfs-pointer)",
                                "git lfs install && git lfs pull in the model folder, or download with huggingface-cli"))
    if not files:
        checks.append(HostCheck("weights", "unknown", f"no weight files (*.safetensors, *.bin, *.pt) in {root}"))
        return checks
    largest = max(files, key=lambda p: p.stat().st_size)
    size, total = largest.stat().st_size, sum(p.stat().st_size for p in files)
    detail = (f"{len(files)} weight file(s), {total / GIB:.1f} GiB in all; largest {printable(largest.name)} "
              f"{size / GIB:.2f} GiB")
    if not missing and not pointers and not corrupt:
        checks.append(HostCheck("weights", "ok", detail))
    available = meminfo.get("MemAvailable")
    if available is None:
        checks.append(HostCheck("memory-for-weights", "unknown", f"cannot read MemAvailable from {meminfo_path}"))
    elif 2 * size > available:
        checks.append(HostCheck(
            "memory-for-weights", "fail",
            f"loading needs about twice the largest shard ({2 * size / GIB:.1f} GiB) but only "
            f"{available / GIB:.1f} GiB is available: the kernel will kill the process with a bare 'Killed' "
            "(host-oom-killed)",
            "re-save with smaller shards (save_pretrained(max_shard_size='2GB'), safetensors), load with "
            "low_cpu_mem_usage=True, or give the machine/container more memory"))
    elif total + size > available:
        checks.append(HostCheck(
            "memory-for-weights", "warn",
            f"a full load without low_cpu_mem_usage needs about {(total + size) / GIB:.1f} GiB per process, "
            f"{available / GIB:.1f} GiB is available",
            "load with low_cpu_mem_usage=True (or a device_map) and start one loading process per GPU at most"))
    else:
        checks.append(HostCheck("memory-for-weights", "ok",
                                f"{available / GIB:.1f} GiB available for {total / GIB:.1f} GiB of weights"))
    return checks


def _head(path: Path, size: int) -> bytes:
    try:
        with os.fdopen(open_regular(path), "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def _tokenizer_check(root: Path) -> HostCheck:
    config = _load_json(root / "config.json") or {}
    tok_config = _load_json(root / "tokenizer_config.json") or {}
    special = _load_json(root / "special_tokens_map.json") or {}
    if not config and not tok_config:
        return HostCheck("tokenizer", "unknown", "no config.json or tokenizer_config.json to read")
    fix = ("use a correctly converted checkpoint (transformers' convert_llama_weights_to_hf.py, >= 4.28); if you "
           "must keep this one, load LlamaTokenizer and set bos_token_id=1, eos_token_id=2, pad_token_id=0 on "
           "the tokenizer and model.config before tokenising")
    problems = []
    if tok_config.get("tokenizer_class") == "LLaMATokenizer":
        problems.append("tokenizer_class is LLaMATokenizer, the pre-release name of the decapoda conversion")
    listed = config.get("architectures")  # a list of class names; a hand-edited file may hold anything
    architectures = [listed] if isinstance(listed, str) else [str(a) for a in listed] if isinstance(listed, list) else []
    is_llama = config.get("model_type") == "llama" or any(a.lower().startswith("llamafor") for a in architectures)
    if is_llama and config.get("vocab_size") == LLAMA_VOCAB:
        bos, eos = config.get("bos_token_id"), config.get("eos_token_id")
        if (bos, eos) != (1, 2):
            problems.append(f"config.json has bos_token_id={bos}, eos_token_id={eos}; LLaMA's are 1 and 2, so "
                            "the EOS appended in training is never the real one")
        for key in ("bos_token", "eos_token"):
            value = special.get(key, tok_config.get(key))
            if isinstance(value, dict):
                value = value.get("content")
            if value == "":
                problems.append(f"{key} is an empty string")
    if problems:
        return HostCheck("tokenizer", "fail", "decapoda-style LLaMA conversion (llama-decapoda-tokenizer): "
                         + printable("; ".join(problems)), fix)
    kind = tok_config.get("tokenizer_class") or config.get("model_type") or "unknown"
    return HostCheck("tokenizer", "ok", f"{printable(str(kind))}: special tokens look consistent")
