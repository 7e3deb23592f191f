"""Domain rules: what DeepSpeed, flash-attn, xformers and old torch need from a release.

Run by the profile loader on every resolved release; each rule reports a problem with its fix
at the field it is about, like every other profile check.
"""

from __future__ import annotations

from collections.abc import Callable

from packaging.version import Version

from . import versions as compat
from . import targets
from .resolved import CompiledPackage, Pin, Release, TargetSpec
from .problems import dotted
from .source import PathKey

class RuleCheck:
    """Checks one resolved release; ``problem(path, message, fix)`` records what it finds."""

    def __init__(self, problem: Callable[..., None], at: PathKey, release: Release):
        self.problem = problem
        self.at = at
        self.rel = release

    def run(self) -> None:
        self._duplicates()
        self._numpy()
        self._compiled()
        self._xformers()
        self._patches()
        self._fix_mechanisms()

    def _all_pins(self) -> list[tuple[PathKey, Pin]]:
        at = self.at
        out: list[tuple[PathKey, Pin]] = [((*at, "with_torch", i), p) for i, p in enumerate(self.rel.with_torch)]
        for i, comp in enumerate(self.rel.compiled):
            out.append(((*at, "compiled", i, "package"), comp.pin))
            out.extend(((*at, "compiled", i, "requires", j), p) for j, p in enumerate(comp.requires))
        out.extend(((*at, "packages", i), p.pin) for i, p in enumerate(self.rel.packages))
        out.extend(((*at, "last_packages", i), p.pin) for i, p in enumerate(self.rel.last_packages))
        return out

    def pinned(self, name: str) -> Pin | None:
        for _, pin in self._all_pins():
            if pin.name == name:
                return pin
        return None

    def _duplicates(self) -> None:
        seen: dict[str, PathKey] = {}
        for path, pin in self._all_pins():
            if pin.name == "torch":
                fields = [f"'{name}'" for name in ("torch", *self.rel.accelerator_versions)]
                fields_text = " and ".join([", ".join(fields[:-1]), fields[-1]] if len(fields) > 1 else fields)
                self.problem(path, f"torch is pinned by the release's {fields_text} field{'s' * (len(fields) > 1)}",
                               "remove it from this list")
            elif pin.name in seen:
                self.problem(path, f"'{pin.name}' is pinned twice (also at {dotted(seen[pin.name])})",
                               "keep one pin")
            else:
                seen[pin.name] = path

    def _numpy(self) -> None:
        if compat.version_tuple(self.rel.torch)[:2] >= compat.TORCH_NEEDS_NUMPY1_BELOW:
            return
        numpy = next((p for p in self.rel.with_torch if p.name == "numpy"), None)
        if numpy is None or numpy.version is None or Version(numpy.version) >= Version("2"):
            self.problem((*self.at, "with_torch"), f"torch {self.rel.torch} breaks with NumPy 2",
                           "pin numpy 1.x in with_torch, e.g. numpy==1.24.4")

    def _compiled(self) -> None:
        for index, comp in enumerate(self.rel.compiled):
            path = (*self.at, "compiled", index)
            if comp.pin.name == "flash-attn":
                self._flash_attn(comp, path)
            if comp.pin.name == "deepspeed":
                self._deepspeed(comp, path)

    def _flash_attn(self, comp: CompiledPackage, path: PathKey) -> None:
        if not comp.no_build_isolation:
            self.problem((*path, "no_build_isolation"),
                           "flash-attn's setup.py imports torch, which build isolation hides (No module named 'torch')",
                           "set no_build_isolation: true")
        if comp.memory_per_job_gib is None:
            self.problem(path, "flash-attn's build needs MAX_JOBS bounded by memory or it is OOM-killed",
                           "set memory_per_job_gib (about 9 at NVCC_THREADS=4)")
        compiled_for = [name for name in self.rel.targets
                        if targets.target(name).compiles_for_archs and name in comp.targets]
        for name in compiled_for:
            self._flash_attn_archs(comp, path, self.rel.targets[name])
        if compiled_for and comp.pin.version:
            self._flash_attn_cxx(comp, path)

    def _flash_attn_cxx(self, comp: CompiledPackage, path: PathKey) -> None:
        needed = compat.torch_cxx_standard(self.rel.torch)
        if needed <= 17:
            return
        known = compat.FLASH_ATTN_CXX_STANDARD.get(comp.pin.version)
        if known is None:
            self.problem((*path, "package"),
                         f"torch {self.rel.torch}'s headers need C++{needed}, and which C++ standard flash-attn "
                         f"{comp.pin.version} compiles with is not known here",
                         "keep torch below 2.12, or read flash-attn's setup.py and add the release to "
                         "FLASH_ATTN_CXX_STANDARD (builder/profile/versions.py)")
        elif known < needed:
            self.problem((*path, "package"),
                         f"flash-attn {comp.pin.version} compiles with -std=c++{known}, and torch {self.rel.torch}'s "
                         f"headers need C++{needed} (#error C++{needed} or later compatible compiler is required "
                         "to use ATen)",
                         "keep torch below 2.12 until a flash-attn release compiles with C++20")

    def _flash_attn_archs(self, comp: CompiledPackage, path: PathKey, spec: TargetSpec) -> None:
        for i, arch in enumerate(spec.arch_list):
            if compat.version_tuple(arch) < (8, 0):
                self.problem(("releases", self.rel.name, "targets", spec.name, "arch_list", i),
                               f"flash-attn does not support sm_{arch.replace('.', '')} (it needs sm80+, Ampere or newer)",
                               "limit arch_list to 8.0 and above; pre-Ampere GPUs use the xformers option")
        version = Version(comp.pin.version) if comp.pin.version else None
        env = dict(comp.env.get(spec.name, ()))
        if version is not None and version >= Version("2.7"):
            value = env.get("FLASH_ATTN_CUDA_ARCHS")
            wanted = ";".join(a.replace(".", "") for a in spec.arch_list)
            if value is None:
                self.problem((*path, "env", spec.name), "flash-attn >= 2.7 ignores TORCH_CUDA_ARCH_LIST",
                               f"set FLASH_ATTN_CUDA_ARCHS: \"{wanted}\"")
            elif set(value.split(";")) - set(wanted.split(";")):
                self.problem((*path, "env", spec.name, "FLASH_ATTN_CUDA_ARCHS"),
                               f"'{value}' names archs outside the target's arch_list ({wanted})",
                               f"use \"{wanted}\" or a subset")

    def _deepspeed(self, comp: CompiledPackage, path: PathKey) -> None:
        version = Version(comp.pin.version) if comp.pin.version else None
        flags_any = {k: v for env in comp.env.values() for k, v in env}
        if any(k.startswith("DS_BUILD_") and v == "1" for k, v in flags_any.items()) and not comp.no_build_isolation:
            self.problem((*path, "no_build_isolation"),
                           "pre-compiling DeepSpeed ops needs torch importable at build time",
                           "set no_build_isolation: true")
        names = {p.name for p in comp.requires} | {p.pin.name for p in (*self.rel.packages, *self.rel.last_packages)}
        if "ninja" not in names:
            self.problem((*path, "requires"), "DeepSpeed JIT-loads ops at run time and needs ninja",
                           "add ninja==<version> to requires")
        for target, env in comp.env.items():
            flags = dict(env)
            epath = (*path, "env", target)
            if (flags.get("DS_BUILD_OPS") == "1" or flags.get("DS_BUILD_AIO") == "1") and "libaio-dev" not in self.rel.apt:
                self.problem(epath, "async_io is pre-compiled but libaio-dev is not installed "
                               "(Unable to pre-compile async_io)", "add libaio-dev to apt")
            if (version is not None and version < Version("0.15.1") and flags.get("DS_BUILD_OPS") == "1"
                    and compat.version_tuple(self.rel.torch) >= (2,) and flags.get("DS_BUILD_SPARSE_ATTN") != "0"):
                self.problem(epath, f"deepspeed {version} aborts on sparse_attn, which needs torch < 2",
                               "set DS_BUILD_SPARSE_ATTN: \"0\"")
            accelerator = targets.target(target).accelerator
            if (accelerator is not None and version is not None and version >= Version("0.14.1")
                    and flags.get("DS_ACCELERATOR") != accelerator):
                self.problem(epath, f"deepspeed {version} picks its CPU accelerator when no GPU is visible "
                               "during docker build, and the ops are useless on a GPU",
                               f"set DS_ACCELERATOR: {accelerator}")
        pydantic = self.pinned("pydantic")
        if (version is not None and Version("0.9.2") <= version <= Version("0.11.0") and pydantic is not None
                and pydantic.version and Version(pydantic.version) >= Version("2")):
            self.problem((*path, "package"), f"deepspeed {version} requires pydantic<2 but pydantic=={pydantic.version} "
                           "is pinned", "pin pydantic 1.10.x")

    def _xformers(self) -> None:
        sources: list[tuple[PathKey, Pin]] = [(p, pin) for p, pin in self._all_pins()]
        for oname, opt in self.rel.options.items():
            sources.extend(((*self.at, "options", oname, "packages", i), p) for i, p in enumerate(opt.packages))
        for path, pin in sources:
            if pin.name != "xformers" or pin.version is None:
                continue
            wanted = compat.XFORMERS_TORCH.get(pin.version)
            if wanted is None:
                self.problem(path, f"xformers {pin.version} is not in stackbuild's table of xformers -> torch pins",
                               f"known: {', '.join(compat.XFORMERS_TORCH)}")
            elif wanted != self.rel.torch:
                self.problem(path, f"xformers {pin.version} requires torch=={wanted}, the release pins {self.rel.torch}",
                               "choose the xformers release built for this torch")

    def _patches(self) -> None:
        names = {pin.name for _, pin in self._all_pins()} | {"torch"}
        for index, patch in enumerate(self.rel.patches):
            if patch.package not in names:
                self.problem((*self.at, "patches", index, "package"),
                               f"patch targets '{patch.package}', which this release does not install",
                               f"use one of: {', '.join(sorted(names))}")
        ids = [p.id for p in self.rel.patches]
        for index, pid in enumerate(ids):
            if ids.index(pid) != index:
                self.problem((*self.at, "patches", index, "id"), f"patch id '{pid}' is used twice", "rename one")

    def _fix_mechanisms(self) -> None:
        patched = {p.fixes for p in self.rel.patches}
        for fix in self.rel.fixes:
            if fix.via == "patch" and fix.issue.id not in patched:
                self.problem((*self.at, "fixes"), f"fix '{fix.issue.id}' is 'via: patch' but no patch fixes it",
                               "add the patch or change 'via'")
