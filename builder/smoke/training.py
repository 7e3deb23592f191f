"""Training entries: today's training code of a release, run in a container of its image, and what it saved checked.

A release's profile lists the training code it runs (``training:``, builder/profile/resolved.py's
``Training``): a command line of what the image's locked wheels ship (`trl sft`, `accelerate
launch`), with placeholders for the model, data, output folder, steps and processes. This module
starts a network-less container of the image, sends stackbuild's workbench into it
(templates/training/workbench.py: not part of any image), which makes a tiny random LLaMA-like
model, its tokenizer and a few records of text with the image's own transformers, runs each entry
offline (HF_HUB_OFFLINE=1) and then reads what the entry saved: a PEFT adapter whose LoRA B
tensors were trained away from zero, or a full model whose weights moved from the initial ones,
plus the entry's evidence (log lines, checkpoint files) that it ran as promised (distributed,
offloaded). Results come as SmokeResult lines, so `stackbuild test --training` prints, writes JSON
and JUnit like the smoke checks.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..engine.api import ContainerEngine, GpuRequest
from ..errors import SmokeError
from ..plan import labels as schema
from ..profile import targets
from ..profile.resolved import Release, Training
from ..safety.paths import templates_dir
from .run import KEPT, SmokeReport, SmokeResult, sweep_leftovers

ROOT = "/tmp/stackbuild-training"
WORKBENCH = f"{ROOT}/workbench.py"
MARKER = "STACKBUILD-WORKBENCH "
# Each entry's run is bounded by the container's lifetime: this much per entry, plus the set-up.
ENTRY_TIMEOUT_S = 1200
SETUP_TIMEOUT_S = 600
# What a container of a training run needs to stay offline and quiet.
ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "WANDB_DISABLED": "true", "WANDB_MODE": "disabled",
               "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
# Writes one file in the container from base64 text (the engine API has no copy call that every
# engine shares; this needs only the image's Python).
_WRITE = ("import base64, os, sys; os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True); "
          "open(sys.argv[1], 'wb').write(base64.b64decode(sys.argv[2]))")
LOG_TAIL = 400_000  # characters of an entry's output kept for the verdict and the report


@dataclass(frozen=True)
class EntryRun:
    """One entry's run: its exit code, its output and what the workbench read from its output folder."""

    exit_code: int
    log: str
    saved: dict
    seconds: float


def workbench_source() -> bytes:
    return (templates_dir() / "training" / "workbench.py").read_bytes()


def entries_of(release: Release, target: str, only: list[str] | tuple[str, ...] = ()) -> list[Training]:
    """The release's training entries that run on ``target`` (those named by ``only``, all known)."""
    names = {entry.name for entry in release.training}
    unknown = [name for name in only if name not in names]
    if unknown:
        raise SmokeError(f"release {release.name} has no training entry '{unknown[0]}'; entries: "
                         f"{', '.join(sorted(names)) or '(none)'}")
    chosen = [entry for entry in release.training if not only or entry.name in only]
    return [entry for entry in chosen if target in entry.targets]


def _last_error(log: str) -> str:
    """The last line of a log that reads like an error, else its last non-empty line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if any(word in line for word in ("Error", "error:", "Exception", "Killed", "FAILED")):
            return line[:300]
    return lines[-1][:300] if lines else "(no output)"


# What a rank prints when its process exits with gloo's worker threads still running: the script never called
# destroy_process_group (TRL's sft script does not), and the C++ runtime aborts the process at interpreter exit,
# at times, after everything was saved (pytorch/pytorch#190489; seen in CI with sft-zero3-offload on 2026.12)
TEARDOWN_ABORT = "terminate called without an active exception"


def verdict(entry: Training, target: str, run: EntryRun) -> tuple[str, str]:
    """pass, warn or fail, with a detail naming what was saved or what is missing (pure: unit-tested). A run that
    saved everything it must and then lost a rank to the teardown abort above warns: what it saved is complete,
    but its launcher exited non-zero, as a scheduler will see it."""
    if run.exit_code != 0:
        failed = f"{entry.command[0]} exited {run.exit_code}: {_last_error(run.log)}"
        if TEARDOWN_ABORT not in run.log:
            return "fail", failed
        status, detail = verdict(entry, target, replace(run, exit_code=0))
        if status != "pass":
            return "fail", failed
        return "warn", (f"{detail}; then a rank aborted at exit ('{TEARDOWN_ABORT}': the script never destroys its "
                        f"process group, pytorch/pytorch#190489), so {entry.command[0]} exited {run.exit_code}")
    evidence = entry.evidence_for(target)
    missing_log = [text for text in evidence.log if text not in run.log]
    if missing_log:
        return "fail", f"the log does not show {missing_log[0]!r}, so the run did not go as the entry promises"
    files = run.saved.get("files") or {}
    missing_files = [pattern for pattern in evidence.files if not fnmatch.filter(files, pattern)]
    if missing_files:
        return "fail", f"no saved file matches {missing_files[0]} (saved: {', '.join(sorted(files)[:8]) or 'nothing'})"
    if run.saved.get("meta"):
        return "fail", f"{run.saved['meta']} saved tensors are on the meta device (nothing real was written)"
    if entry.saves == "adapter":
        adapters = {name: size for name, size in files.items() if name.startswith("adapter_model")}
        if not adapters:
            return "fail", f"no adapter_model file in the output (saved: {', '.join(sorted(files)[:8]) or 'nothing'})"
        lora_b, trained = run.saved.get("lora_b", 0), run.saved.get("lora_b_nonzero", 0)
        if not run.saved.get("lora_tensors") or not lora_b:
            return "fail", (f"the adapter holds no LoRA tensors ({max(adapters.values())} bytes): an empty adapter, as "
                            "peft-empty-adapter saves")
        if trained < lora_b:
            return "fail", (f"{lora_b - trained} of {lora_b} LoRA B tensors are still zero: the adapter was saved "
                            "untrained")
        return "pass", (f"adapter: {run.saved['lora_tensors']} LoRA tensors (r={run.saved.get('adapter_r')}), "
                        f"{trained}/{lora_b} B trained, {max(adapters.values())} bytes")
    initial, shared, changed = run.saved.get("initial_tensors", 0), run.saved.get("shared", 0), run.saved.get("changed", 0)
    if not shared or shared < initial:
        return "fail", (f"the saved model holds {shared} of the {initial} initial weights at their shapes "
                        f"(saved: {', '.join(sorted(files)[:8]) or 'nothing'})")
    if not changed:
        return "fail", f"all {shared} saved weights equal the initial ones: nothing was trained"
    shown = f"; {len(evidence.log) + len(evidence.files)} evidence items seen" if evidence.log or evidence.files else ""
    return "pass", f"full model: {shared} weights, {changed} trained away from their initial values{shown}"


def _marked(text: str) -> dict:
    for line in reversed(text.splitlines()):
        if line.startswith(MARKER):
            try:
                data = json.loads(line[len(MARKER):])
            except ValueError:
                break
            if isinstance(data, dict):
                return data
    raise SmokeError(f"the training workbench printed no result: {_last_error(text)}")


def _exec(engine: ContainerEngine, container: str, argv: list[str], on_output: Callable[[str], None],
          workdir: str = ROOT) -> tuple[int, str]:
    """Run ``argv`` in the container: (exit code, output with stdout and stderr as they came, its tail)."""
    run = engine.exec_stream(container, argv, workdir=workdir)
    kept: list[str] = []
    size = 0
    try:
        for out, err in run.output:
            for chunk in (out, err):
                if chunk:
                    text = chunk.decode("utf-8", "replace")
                    on_output(text)
                    kept.append(text)
                    size += len(text)
                    while size > LOG_TAIL and len(kept) > 1:
                        size -= len(kept.pop(0))
    except KeyboardInterrupt:
        run.stop()
        raise
    return run.exit_code(), "".join(kept)


def run_training(engine: ContainerEngine, image: str, release: Release, target: str, *,
                 only: list[str] | tuple[str, ...] = (), steps: int = 2, gpus: str | None = None, keep: bool = False,
                 on_result: Callable[[SmokeResult], None] = lambda result: None,
                 on_output: Callable[[str, str], None] = lambda entry, text: None) -> tuple[SmokeReport, dict[str, str]]:
    """Run the release's training entries for ``target`` in one network-less container of ``image``.

    Returns the report (one result per entry) and each entry's output. The container is removed
    unless ``keep``; it stops by itself when its lifetime (every entry's timeout) runs out."""
    if not 1 <= steps <= 1000:
        raise SmokeError(f"--steps {steps} is out of range (1-1000)")
    entries = entries_of(release, target, only)
    report = SmokeReport(image, swept=sweep_leftovers(engine))
    logs: dict[str, str] = {}
    if not entries:
        report.exit_code = 0
        return report, logs
    request = GpuRequest.of(gpus, targets.target(target).gpu_capabilities)
    if targets.target(target).gpu and request is None:
        for entry in entries:
            result = SmokeResult(entry.name, "skip", f"the {target} variant needs a GPU: run with --gpus all", 0.0)
            report.results.append(result)
            on_result(result)
        report.exit_code = 0
        return report, logs
    name = f"stackbuild-training-{uuid.uuid4().hex[:10]}"
    container = engine.start_container(image, name, {schema.SMOKE: KEPT if keep else "1"}, request, "2g",
                                       network="none", env=ENVIRONMENT, lifetime_s=SETUP_TIMEOUT_S + ENTRY_TIMEOUT_S * len(entries))
    report.container = name if keep else None
    try:
        source = base64.b64encode(workbench_source()).decode("ascii")
        code, text = _exec(engine, container, ["python", "-c", _WRITE, WORKBENCH, source], lambda t: None, "/")
        if code != 0:
            raise SmokeError(f"cannot write the training workbench into {image}: {_last_error(text)}")
        code, text = _exec(engine, container, ["python", WORKBENCH, "prepare", ROOT], lambda t: None)
        if code != 0:
            raise SmokeError(f"the tiny model and data could not be made in {image}: {_last_error(text)}")
        made = _marked(text)
        for entry in entries:
            output = f"{ROOT}/out/{entry.name}"
            argv = entry.argv(target, {"model": str(made["model"]), "data": str(made["data"]), "output": output,
                                       "steps": str(steps)})
            started = time.monotonic()
            code, log = _exec(engine, container, argv, lambda t, n=entry.name: on_output(n, t))
            seconds = time.monotonic() - started
            logs[entry.name] = log
            inspect_code, inspected = _exec(engine, container, ["python", WORKBENCH, "inspect", output, ROOT],
                                            lambda t: None)
            saved = _marked(inspected) if inspect_code == 0 else {}
            status, detail = verdict(entry, target, EntryRun(code, log, saved, seconds))
            result = SmokeResult(entry.name, status, detail, round(seconds, 1))
            report.results.append(result)
            on_result(result)
        report.exit_code = 0
    finally:
        if not keep:
            engine.remove_container(container)
    return report, logs
