"""Known vulnerabilities of the Python packages an image installs, from PyPI's vulnerability data.

For every locked ``name==version`` (a release's locks, or an image's ``io.stackbuild.lock``
label), PyPI's JSON API (the ``audit_url`` setting) is asked ``/<name>/<version>/json``; its
``vulnerabilities`` (OSV records: id, aliases, fixed_in) are the advisories that affect that very
version. Where that endpoint is not served (some mirrors and proxies serve only
``/<name>/json``, whose ``vulnerabilities`` are those of the project's latest version), the answer
counts only when the latest version is the locked one; otherwise the package is reported as not
seen. Debian packages are not audited: Debian's security tracker cannot be reached from here, and
the report says so.

A finding is allowed by the release's ``audit_allow`` entry of its id or one of its aliases while
the entry has not expired. The result fails (exit 14) when a finding is neither allowed nor — for
an era release, which reproduces 2023 on purpose — only reported; an expired entry fails too.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from ..plan import labels as schema
from ..errors import AuditError, AuditUnavailable, StackbuildError
from ..images.lookup import packages_of
from ..plan.build_plan import plan_build
from ..safety.printable import printable
from ..profile.load import available_stacks, load_stack
from ..profile.spec import looks_like_image, split_spec
from ..profile.resolved import AuditAllow

MAX_ANSWER_BYTES = 32 * 1024 * 1024  # a project's JSON lists every release's files
NOT_SEEN_LATEST = "PyPI's JSON API here answers only for the project's latest version"
DEBIAN_NOT_SEEN = ("Debian packages are not audited: Debian's security tracker (security-tracker.debian.org) "
                   "cannot be reached from here")


@dataclass(frozen=True)
class Vulnerability:
    id: str
    aliases: tuple[str, ...]
    summary: str
    fixed_in: tuple[str, ...]
    link: str

    def names(self) -> set[str]:
        return {self.id, *self.aliases}


@dataclass(frozen=True)
class Finding:
    package: str
    version: str
    vulnerability: Vulnerability
    allowed_by: AuditAllow | None = None


@dataclass
class AuditReport:
    subject: str
    era: bool
    packages: int = 0
    findings: list[Finding] = field(default_factory=list)
    not_seen: list[tuple[str, str, str]] = field(default_factory=list)  # (name, version, why)
    expired: list[AuditAllow] = field(default_factory=list)
    unused: list[AuditAllow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def unallowed(self) -> list[Finding]:
        return [f for f in self.findings if f.allowed_by is None]

    @property
    def failed(self) -> bool:
        return bool(self.expired) or (bool(self.unallowed) and not self.era)

    def as_dict(self) -> dict:
        def vuln(f: Finding) -> dict:
            v = f.vulnerability
            return {"package": f.package, "version": f.version, "id": v.id, "aliases": list(v.aliases),
                    "fixed_in": list(v.fixed_in), "link": v.link, "summary": v.summary,
                    "allowed": None if f.allowed_by is None else {"id": f.allowed_by.id, "reason": f.allowed_by.reason,
                                                                  "expires": f.allowed_by.expires}}
        return {"subject": self.subject, "era": self.era, "packages": self.packages, "failed": self.failed,
                "findings": [vuln(f) for f in self.findings],
                "not_seen": [{"package": n, "version": v, "why": w} for n, v, w in self.not_seen],
                "expired_allow": [a.id for a in self.expired], "unused_allow": [a.id for a in self.unused],
                "notes": self.notes}


def _vulnerability(record: dict) -> Vulnerability | None:
    if not isinstance(record, dict) or not record.get("id") or record.get("withdrawn"):
        return None
    return Vulnerability(str(record["id"]), tuple(str(a) for a in record.get("aliases") or ()),
                         str(record.get("summary") or record.get("details") or "").strip().split("\n")[0][:200],
                         tuple(str(v) for v in record.get("fixed_in") or ()), str(record.get("link") or ""))


def _vulnerabilities(records: list) -> list[Vulnerability]:
    """The records as vulnerabilities, one per advisory: PyPI lists the PYSEC and the GHSA record of one
    flaw separately, each naming the other among its aliases."""
    out: list[Vulnerability] = []
    for v in filter(None, map(_vulnerability, records)):
        same = next((i for i, known in enumerate(out) if known.names() & v.names()), None)
        if same is None:
            out.append(v)
        else:
            known = out[same]
            aliases = tuple(sorted((known.names() | v.names()) - {known.id}))
            out[same] = Vulnerability(known.id, aliases, known.summary or v.summary,
                                      tuple(dict.fromkeys((*known.fixed_in, *v.fixed_in))), known.link or v.link)
    return out


class VulnerabilitySource:
    """PyPI's JSON API at ``base`` (https://pypi.org/pypi), with answers kept for the process's life."""

    def __init__(self, base: str, timeout: float = 30):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self._answers: dict[tuple[str, str], tuple[list[Vulnerability] | None, str]] = {}
        self.failures = 0

    def _get(self, path: str) -> dict | None:
        url = f"{self.base}/{path}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as answer:  # noqa: S310 - http(s) setting
                data = json.loads(answer.read(MAX_ANSWER_BYTES))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise AuditUnavailable(f"{url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise AuditUnavailable(f"{url}: {getattr(exc, 'reason', exc)}") from None
        if not isinstance(data, dict) or not isinstance(data.get("info") or {}, dict) or not isinstance(
                data.get("vulnerabilities") or [], list):
            raise AuditUnavailable(f"{url}: not PyPI's JSON API (no info object and vulnerabilities list)")
        return data

    def lookup(self, name: str, version: str) -> tuple[list[Vulnerability] | None, str]:
        """(the vulnerabilities of name==version, or None when they cannot be seen; why not)."""
        key = (name.lower(), version)
        try:
            Version(version)
        except InvalidVersion:
            return None, "not a released version (a git pin or a URL): PyPI has no data for it"
        if key not in self._answers:
            quoted = urllib.parse.quote(name, safe="")
            exact = self._get(f"{quoted}/{urllib.parse.quote(version, safe='')}/json")
            if exact is not None:
                answer = _vulnerabilities(exact.get("vulnerabilities") or []), ""
            else:
                project = self._get(f"{quoted}/json")
                if project is None:
                    answer = None, "not on this index (a package from another index or a git pin)"
                elif str((project.get("info") or {}).get("version")) == version:
                    answer = _vulnerabilities(project.get("vulnerabilities") or []), ""
                else:
                    answer = None, NOT_SEEN_LATEST
            self._answers[key] = answer
        return self._answers[key]


def audit(subject: str, packages: dict[str, str], allow: tuple[AuditAllow, ...], era: bool,
          source: VulnerabilitySource, today: dt.date | None = None) -> AuditReport:
    """Audit ``packages`` (name -> version) against PyPI's data and a release's allowlist."""
    today = today or dt.date.today()
    report = AuditReport(subject, era, len(packages))
    live = [a for a in allow if dt.date.fromisoformat(a.expires) >= today]
    report.expired = [a for a in allow if a not in live]
    items = sorted(packages.items())
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda item: source.lookup(*item), items))
    used: set[str] = set()
    for (name, version), (vulnerabilities, why) in zip(items, answers):
        if vulnerabilities is None:
            report.not_seen.append((name, version, why))
            continue
        for v in vulnerabilities:
            entry = next((a for a in live if a.id in v.names()), None)
            if entry is not None:
                used.add(entry.id)
            report.findings.append(Finding(name, version, v, entry))
    report.unused = [a for a in live if a.id not in used and not report.not_seen]
    report.notes.append(DEBIAN_NOT_SEEN)
    return report


def failure(reports: list[AuditReport]) -> AuditError | None:
    """The error of the reports that fail (an unallowed vulnerability of a current release, an expired entry)."""
    failed = [r for r in reports if r.failed]
    if not failed:
        return None
    parts = []
    for r in failed:
        what = [f"{f.package}=={f.version} {f.vulnerability.id}" for f in r.unallowed]
        what += [f"audit_allow {a.id} expired on {a.expires}" for a in r.expired]
        parts.append(f"{r.subject}: {', '.join(what)}")
    return AuditError("known vulnerabilities neither fixed nor allowed: " + "; ".join(printable(p) for p in parts)
                      + " (update the pin and lock again, or add an audit_allow entry with its reason and an "
                      "expiry date to the release in its profile)")


def _release_packages(stack, release, target: str | None) -> tuple[dict[str, str], list[str]]:
    """name -> version of every lock of a release (its targets, or ``target``), else of its pins."""
    packages: dict[str, str] = {}
    notes: list[str] = []
    names = [target] if target else list(release.targets)
    unlocked = []
    for name in names:
        plan = plan_build(stack, release.name, name, ())
        if plan.lock is None:
            unlocked.append(name)
            pins = json.loads(plan.labels().get(schema.PINS) or "{}")
            packages.update({k: v for k, v in pins.items() if isinstance(v, str)})
        else:
            packages.update(plan.lock.versions())
    if unlocked:
        notes.append(f"{stack.name}@{release.name} ({', '.join(unlocked)}) has no lock: only its pins were audited, "
                     "not what pip resolves for them")
    return packages, notes


def audit_what(what: str | None, target: str | None, every: bool, engine, source: VulnerabilitySource,
               today: dt.date | None = None) -> list[AuditReport]:
    """Audit a stack release (all its targets' locks), an image (its lock label), or with ``every`` each
    release of every shipped stack. ``engine`` is called only for an image."""
    reports = []
    if every:
        for name in available_stacks():
            stack = load_stack(name)
            for release in stack.releases.values():
                reports.append(_audit_release(stack, release, target, source, today))
        return reports
    assert what is not None
    if looks_like_image(what):
        packages = packages_of(what, target, engine)
        labels = engine().labels(what)
        allow, era, subject = (), False, what
        try:
            stack = load_stack(labels.get(schema.STACK, ""))
            release = stack.release(labels.get(schema.RELEASE))
            allow, era, subject = release.audit_allow, release.era, f"{what} ({stack.name}@{release.name})"
        except StackbuildError:
            pass
        report = audit(subject, packages, allow, era, source, today)
        if not allow:
            report.notes.append("no local profile names this image's stack and release: no allowlist applies")
        return [report]
    name, release_name = split_spec(what)
    stack = load_stack(name)
    return [_audit_release(stack, stack.release(release_name), target, source, today)]


def _audit_release(stack, release, target, source, today) -> AuditReport:
    packages, notes = _release_packages(stack, release, target)
    report = audit(f"{stack.name}@{release.name}", packages, release.audit_allow, release.era, source, today)
    report.notes[:0] = notes
    if release.era:
        report.notes.append("an era release reproduces its year's pins on purpose: its findings are reported, "
                            "never a failure")
    return report
