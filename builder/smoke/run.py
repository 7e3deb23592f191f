"""Smoke checks: running an image's checks inside a container and reporting them.

The checks themselves live in templates/context/smoke/ and are copied into every image
(/opt/stackbuild/smoke/), so a pulled image can prove itself with its own Python, offline. The
manifest (/opt/stackbuild/manifest.json) lists them with the pins they verify (plan.select_checks
picks them). This module drives the in-image runner through the engine.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from ..plan import labels as schema
from .checks import CHECKS
from ..engine.api import ContainerEngine, GpuRequest
from ..errors import SmokeError
from ..safety.atomic import write_atomic


@dataclass(frozen=True)
class SmokeResult:
    check: str
    status: str  # pass | warn | fail | skip
    detail: str
    seconds: float


@dataclass
class SmokeReport:
    image: str
    results: list[SmokeResult] = field(default_factory=list)
    exit_code: int | None = None
    container: str | None = None
    swept: list[str] = field(default_factory=list)  # smoke containers of killed runs, removed first

    @property
    def failed(self) -> list[SmokeResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failed and self.exit_code == 0

    def as_dict(self) -> dict:
        return {"image": self.image, "ok": self.ok, "exit_code": self.exit_code, "container": self.container,
                "swept": self.swept, "results": [r.__dict__ for r in self.results]}

    def junit(self) -> str:
        """The report as JUnit XML (one testcase per check; warn is a pass with its detail)."""
        suite = ElementTree.Element("testsuite", name=f"stackbuild smoke {self.image}", tests=str(len(self.results)),
                                    failures=str(len(self.failed)),
                                    skipped=str(sum(r.status == "skip" for r in self.results)),
                                    time=f"{sum(r.seconds for r in self.results):.2f}")
        for result in self.results:
            case = ElementTree.SubElement(suite, "testcase", classname="stackbuild.smoke", name=result.check,
                                          time=f"{result.seconds:.2f}")
            if result.status == "fail":
                ElementTree.SubElement(case, "failure", message=result.detail).text = result.detail
            elif result.status == "skip":
                ElementTree.SubElement(case, "skipped", message=result.detail)
            else:
                ElementTree.SubElement(case, "system-out").text = f"{result.status}: {result.detail}"
        return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


# The in-image runner kills each check at its timeout, so no smoke run outlasts all of them in a
# row; a container whose `stackbuild test` was killed (SIGKILL, a host shut down) stops by itself
# then, and the next run removes it.
SMOKE_LIFETIME_S = sum(check.timeout for check in CHECKS.values()) + 600
# The label's value on a container `--keep` asked for: sweep_leftovers never touches those.
KEPT = "kept"
RUNNER = "/opt/stackbuild/smoke/run.py"  # the in-image runner (templates/context/smoke/run.py)


def sweep_leftovers(engine: ContainerEngine) -> list[str]:
    """Remove the smoke containers earlier runs left behind: not kept, and stopped (a smoke
    container only stops when its run was killed: its engine restarted or its lifetime ran out).
    Running ones, and ones just created, may be another `stackbuild test`'s and stay. The names
    removed."""
    removed = []
    for info in engine.containers(f"{schema.SMOKE}=1"):
        if (info.get("State") or {}).get("Status") in ("exited", "dead"):
            engine.remove_container(info["Id"])
            removed.append(str(info.get("Name", info["Id"])).lstrip("/"))
    return removed


def runner_command(only: list[str] | tuple[str, ...] = (), isolated: bool = False) -> list[str]:
    """The in-image runner's command line: every check, or ``only`` these (with the image's own Python).

    ``isolated``: every check in a fresh interpreter, one at a time - what a container with GPUs needs (a
    forked process may initialise the accelerator otherwise). The caller says so from its device request,
    which comes from the target's accelerator entry; the runner's own device-node probe is only the
    fallback for a run started by hand."""
    return ["python", RUNNER, *(["--isolated"] if isolated else []), *(["--only", *only] if only else [])]


def parse_result(line: str) -> SmokeResult | None:
    """One check's result from a line the runner prints (one JSON object); None for any other line."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or "status" not in data:
        return None
    return SmokeResult(str(data.get("check", "?")), str(data["status"]), str(data.get("detail", "")),
                       float(data.get("seconds", 0.0)))


def run_smoke(engine: ContainerEngine, image: str, *, gpus: str | None = None,
              capabilities: tuple[str, ...] = ("gpu",), keep: bool = False,
              only: list[str] | tuple[str, ...] = (),
              on_result: Callable[[SmokeResult], None] = lambda result: None) -> SmokeReport:
    """Start a network-less container of ``image``, run its smoke runner (every check, or ``only``
    these), and remove the container unless ``keep``. Smoke containers of killed runs go first.

    ``gpus`` are requested with ``capabilities`` (the target's accelerator entry's device request)."""
    report = SmokeReport(image, swept=sweep_leftovers(engine))
    name = f"stackbuild-smoke-{uuid.uuid4().hex[:10]}"
    request = GpuRequest.of(gpus, capabilities)
    container = engine.start_container(image, name, {schema.SMOKE: KEPT if keep else "1"}, request,
                                       lifetime_s=None if keep else SMOKE_LIFETIME_S)
    report.container = name if keep else None
    try:
        lines, exit_code = engine.exec_lines(container, runner_command(only, isolated=request is not None))
        for line in lines:
            result = parse_result(line)
            if result is not None:
                report.results.append(result)
                on_result(result)
        report.exit_code = exit_code()
    finally:
        if not keep:
            engine.remove_container(container)
    if report.exit_code not in (0, 1):
        broken = [r.detail for r in report.results if r.check == "manifest"]
        if broken:
            raise SmokeError(f"{image}: {broken[0]}")
        raise SmokeError(f"the smoke runner in {image} could not run (exit {report.exit_code}); is it a stackbuild "
                         "image? (it needs /opt/stackbuild/smoke/run.py and manifest.json)")
    return report


def write_junit(report: SmokeReport, path: Path) -> None:
    write_atomic(path, report.junit(), SmokeError)
