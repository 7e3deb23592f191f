"""What `list`, `show` and `schema` print, as plain data (the CLI only formats it)."""

from __future__ import annotations

from ..lock.format import lock_file
from ..plan.build_plan import IMPLIED_APT, select_checks
from ..profile.accelerators import ACCELERATORS
from ..profile.load import available_stacks, load_stack
from ..profile.raw import RawStack
from ..safety.paths import user_path
from ..profile.resolved import Release, Stack


def list_stacks() -> list[dict]:
    """Every shipped stack with its releases and targets."""
    rows = []
    for name in available_stacks():
        stack = load_stack(name)
        rows.append({
            "name": stack.name,
            "title": stack.title,
            "default_release": stack.default_release,
            "releases": [
                {"name": r.name, "default": r.name == stack.default_release, "era": r.era, "date": r.date,
                 "summary": r.summary, "targets": list(r.targets)}
                for r in stack.releases.values()
            ],
        })
    return rows


def _lock_file(stack: Stack, rel: Release, target: str) -> str | None:
    """The target's committed lock file (shown, not checked: `stackbuild lock --check` does that)."""
    path = lock_file(stack.path, stack.name, rel.name, target)
    return user_path(path) if path.is_file() else None


def _describe_release(stack: Stack, rel: Release) -> dict:
    by_field = {entry.version_field: entry for entry in ACCELERATORS.values()}
    return {
        "name": rel.name,
        "default": rel.name == stack.default_release,
        "era": rel.era,
        "date": rel.date,
        "summary": rel.summary,
        "notes": list(rel.notes),
        "torch": rel.torch,
        "cuda": rel.accelerator_version("cuda"),  # the key show --json has always had; "accelerators" names each
        # each accelerator version the release sets, by the label of its entry ({"CUDA": "12.8"})
        "accelerators": {by_field[f].label: v for f, v in rel.accelerator_versions.items() if f in by_field},
        "targets": [
            {"name": t.name, "base": t.base.ref, "python": t.python, "torch": t.torch.requirement,
             "torch_index": t.torch_index, "arch_list": list(t.arch_list), "env": dict(t.env),
             "lock": _lock_file(stack, rel, t.name)}
            for t in rel.targets.values()
        ],
        "apt": sorted(set(IMPLIED_APT) | set(rel.apt)),
        "with_torch": [p.requirement for p in rel.with_torch],
        "bootstrap": [p.requirement for p in rel.bootstrap],
        "compiled": [
            {"package": c.pin.requirement, "why": c.why, "targets": list(c.targets),
             "requires": [p.requirement for p in c.requires], "no_build_isolation": c.no_build_isolation,
             "memory_per_job_gib": c.memory_per_job_gib, "parallel_extensions": c.parallel_extensions,
             "env": {t: dict(e) for t, e in c.env.items()}}
            for c in rel.compiled
        ],
        "packages": [{"requirement": p.pin.requirement, "why": p.why, "targets": list(p.targets), "last": False}
                     for p in rel.packages]
        + [{"requirement": p.pin.requirement, "why": p.why, "targets": list(p.targets), "last": True}
           for p in rel.last_packages],
        "patches": [{"id": p.id, "summary": p.summary, "package": p.package, "file": p.file, "find": p.find,
                     "replace": p.replace, "count": p.count, "fixes": p.fixes} for p in rel.patches],
        "options": [{"name": o.name, "summary": o.summary, "targets": list(o.targets),
                     "packages": [p.requirement for p in (*o.packages, *o.last_packages)],
                     "last_packages": [p.requirement for p in o.last_packages],
                     "fixes": [{"issue": f.issue.id, "title": f.issue.title, "via": f.via, "detail": f.detail,
                                "proven_by": list(f.issue.proven_by)} for f in o.fixes],
                     "advisories": [{"issue": a.id, "title": a.title, "fix": " ".join(a.fix.split())}
                                    for a in o.advisories],
                     "checks": [c.name for c in select_checks(rel, (*rel.fixes, *o.fixes))
                                if c not in select_checks(rel, rel.fixes)]}
                    for o in rel.options.values()],
        "declined": [{"name": d.name, "summary": d.summary, "why": d.why, "instead": d.instead,
                      "references": list(d.references)} for d in rel.declined.values()],
        "held": [{"package": h.package, "at": h.at, "newest": h.newest, "why": h.why, "evidence": list(h.evidence),
                  "issue": h.issue, "references": list(h.references)} for h in rel.held],
        "env": dict(rel.env),
        "fixes": [{"issue": f.issue.id, "title": f.issue.title, "via": f.via, "detail": f.detail,
                   "proven_by": list(f.issue.proven_by)} for f in rel.fixes],
        "checks": [{"name": c.name, "summary": c.summary, "gpu": c.gpu} for c in select_checks(rel, rel.fixes)],
        "namesake": _describe_namesake(rel),
        "training": [{"name": t.name, "summary": t.summary, "command": " ".join(t.command), "processes": t.processes,
                      "saves": t.saves, "evidence": {"log": list(t.evidence.log), "files": list(t.evidence.files)},
                      "targets": {name: {"flags": " ".join(v.flags), "evidence": {"log": list(v.evidence.log),
                                                                                  "files": list(v.evidence.files)}}
                                  for name, v in t.targets.items()}}
                     for t in rel.training],
    }


def _describe_namesake(rel: Release) -> dict | None:
    """The namesake project's scripts at this release's commit: on which targets each runs, and why not."""
    ns = rel.namesake
    if ns is None:
        return None
    scripts = []
    for script in ns.scripts:
        targets = {}
        for target in rel.targets:
            unable = ns.unable_for(script, target)
            targets[target] = ({"runs": True} if unable is None else
                               {"runs": False, "why": unable.why, "fails_with": unable.fails_with,
                                "issue": unable.issue, "instead": unable.instead, "training": unable.training})
        scripts.append({"path": script, "targets": targets})
    return {"repository": ns.repository, "commit": ns.commit, "scripts": scripts}


def describe_stack(stack: Stack, release: str | None = None) -> dict:
    """A stack resolved for display: every release, or only the one asked for."""
    releases = [stack.release(release)] if release else list(stack.releases.values())
    return {
        "name": stack.name,
        "title": stack.title,
        "description": stack.description,
        "requires_python": stack.requires_python,
        "default_release": stack.default_release,
        "notes": list(stack.notes),
        "files": [{"name": f.name, "description": f.description} for f in stack.files],
        "releases": [_describe_release(stack, r) for r in releases],
    }


def profile_schema() -> dict:
    """JSON schema of a stack profile file."""
    return RawStack.model_json_schema()
