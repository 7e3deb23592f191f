"""The raw profile model: what a stack's YAML file may say, strictly (unknown keys are errors).

Only the shape is checked here (types, dates, versions, one-line text); builder/profile/load.py resolves
a file into the frozen ``Stack`` (builder/profile/resolved.py) and checks what a shape cannot say.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import (AfterValidator, BeforeValidator, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError,
                      WithJsonSchema, model_validator)

from . import targets
from .accelerators import ACCELERATORS
from .knowledge import CheckName, IssueId, OneLine, Reference
from .problems import Strict

TARGETS = targets.NAMES


def _target_name(value: str) -> str:
    """A name in the target table as it is when a profile loads (a test may register a fixture target)."""
    if value not in targets.TARGETS:
        names = [f"'{name}'" for name in targets.TARGETS]
        raise ValueError(f"{value!r} is not allowed || use {', '.join(names[:-1])} or {names[-1]}"
                         if len(names) > 1 else f"{value!r} is not allowed || use {names[0]}")
    return value


# A target name: checked against the live table; the schema lists the table's names.
Target = Annotated[str, AfterValidator(_target_name), WithJsonSchema({"enum": list(TARGETS), "type": "string"})]

def _to_date(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _iso_date(value: str) -> str:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'{value}' is not a date || write it as YYYY-MM-DD") from None
    return value


def _version_text(value: str) -> str:
    if value != value.strip() or not value.isprintable():
        raise ValueError(f"{value!r} has spaces or control characters || write a version such as 2.0.1")
    try:
        Version(value)
    except InvalidVersion:
        raise ValueError(f"'{value}' is not a version || write a version such as 2.0.1") from None
    if "+" in value:
        builds = "; ".join(f"the {a.label} build follows from '{a.version_field}'" for a in ACCELERATORS.values())
        raise ValueError(f"'{value}' has a local version || name the plain release; {builds}")
    return value


def _major_minor(value: str) -> str:
    if not re.fullmatch(r"\d+\.\d+", value):
        raise ValueError(f"'{value}' is not MAJOR.MINOR || write it like \"3.10\" or \"11.8\" (quoted)")
    return value


IsoDate = Annotated[str, BeforeValidator(_to_date), AfterValidator(_iso_date)]
VersionText = Annotated[str, AfterValidator(_version_text)]
MajorMinor = Annotated[str, AfterValidator(_major_minor)]


class RawFix(Strict):
    issue: IssueId
    via: Literal["apt", "pin", "build-flag", "env", "patch", "python", "base-image", "config", "run-option"]
    detail: OneLine


class RawFile(Strict):
    description: OneLine
    document: dict[str, Any] = Field(alias="json", description="The file's content, written as JSON.")


class RawPatch(Strict):
    id: IssueId
    summary: OneLine
    package: str
    file: str
    find: str
    replace: str
    count: int = 1
    fixes: IssueId


class RawCompiled(Strict):
    package: str
    why: OneLine
    targets: list[Target] = list(TARGETS)
    requires: list[str] = []
    no_build_isolation: bool
    memory_per_job_gib: int | None = None
    parallel_extensions: bool = Field(
        False, description="Build the package's compiled extensions side by side (setuptools' build_ext -j), each in "
        "a build folder of its own, sharing the compile jobs that memory_per_job_gib allows (needs it, and "
        "no_build_isolation); for packages of many extensions, such as DeepSpeed's ops.")
    env: dict[Target, dict[str, str]] = {}


class RawPackage(Strict):
    requirement: str
    why: OneLine
    targets: list[Target] = list(TARGETS)


class RawTarget(Strict):
    base: str
    python: MajorMinor
    arch_list: list[str] = []
    env: dict[str, str] = {}


class RawOption(Strict):
    summary: OneLine
    targets: list[Target] = list(TARGETS)
    packages: list[str] = []
    last_packages: list[str] = Field(
        default=[], description="Pins installed with the release's own last layer instead of [packages], so the "
        "option's image shares every layer before that one with the image without it.")
    fixes: list[RawFix] = []
    advisories: list[IssueId] = Field([], description="Known issues (kind: advisory) that come with the option and "
                                      "no image can prevent, e.g. a training setting it does not combine with; "
                                      "`stackbuild show` prints each with its fix.")


class RawDeclined(Strict):
    """An option this release does not ship, said in the profile (and `stackbuild show`) with what to use instead."""

    summary: OneLine = Field(description="What the option would have been.")
    why: OneLine = Field(description="Why it is not shipped: what could not be pinned or would not be stood behind.")
    instead: OneLine = Field(description="What to use instead.")
    references: list[str] = Field([], description="Public threads or repositories behind the decision "
                                  "(owner/repo or owner/repo#N).")


class RawNamesake(Strict):
    """The project a stack is named after: its own training code is what every release must run."""

    repository: str = Field(description="The project's public repository, as owner/name on GitHub "
                            "(e.g. tloen/alpaca-lora).")
    scripts: list[str] = Field(description="Its training scripts, as paths inside the repository "
                               "(e.g. finetune.py); they are run unchanged.")


class RawNamesakeUnable(Strict):
    """A script that this release cannot run on some targets, said in the profile instead of breaking silently."""

    scripts: list[str] = Field(description="Which of the stack's namesake scripts (paths as in namesake.scripts).")
    targets: list[Target] = Field(description="The targets it cannot run on.")
    why: OneLine = Field(description="Why not: the API it calls that this release's libraries removed, the "
                         "package the target lacks, or what cannot be built here; with the edit that would fix it.")
    fails_with: OneLine | None = Field(None, description="The error line the unchanged script stops with in this "
                                       "release's image (checked by the namesake integration test); leave out "
                                       "where the image cannot be built here.")
    issue: IssueId | None = Field(None, description="The known issue (stacks/known-issues.yaml) doctor reports for "
                                  "that failure; its fix for this release names what runs the script.")
    instead: OneLine = Field(description="What to use instead: another release or target that runs it.")
    training: str | None = Field(None, description="The name of this release's training entry (its 'training' "
                                 "list) that runs in the script's place on these targets: today's code for the "
                                 "same job.")


class RawNamesakeRun(Strict):
    """Which version of the namesake project a release is meant to run, and where it cannot."""

    commit: str = Field(description="The full 40-character commit of the namesake repository whose scripts this "
                        "release runs.")
    unable: list[RawNamesakeUnable] = Field([], description="Scripts x targets this release cannot run, each with "
                                            "why and what to use instead; everything not listed must run.")



class RawTrainingEvidence(Strict):
    """What shows that a run went the way the entry promises (distributed, offloaded), besides what it saved."""

    log: list[OneLine] = Field([], description="Text the run's output must contain (e.g. DeepSpeed's 'Detected "
                               "ZeRO Offload').")
    files: list[str] = Field([], description="Files the run must write, as glob patterns relative to its output "
                             "folder (e.g. checkpoint-*/pytorch_model_fsdp.bin: the checkpoint FSDP saves).")


class RawTrainingTarget(Strict):
    """How a training entry runs on one target."""

    flags: str = Field("", description="Arguments added to the command on this target: --use_cpu or --ddp_backend "
                       "gloo on cpu; a GPU variant's --load_in_4bit, --bf16 true or --attn_implementation "
                       "flash_attention_2 on cuda.")
    evidence: RawTrainingEvidence = Field(default_factory=RawTrainingEvidence,
                                          description="Evidence required on this target besides the entry's own.")


class RawTraining(Strict):
    """Today's training code for the stack's job, run from what the image's locked wheels ship (a CLI such as
    `trl sft` or `accelerate launch`), unchanged, on a tiny model and data made in the container."""

    name: str = Field(description="The entry's name (lowercase words joined by '-'), e.g. sft-lora.")
    summary: OneLine = Field(description="What it runs and what it proves.")
    command: OneLine = Field(description="The command line, words separated by spaces, no shell syntax. "
                             "Placeholders: {model} (the tiny model's folder), {data} (a folder of JSON lines with a "
                             "'text' field), {output} (the folder it must save into), {steps} (training steps), "
                             "{processes} (the entry's processes).")
    processes: int = Field(1, description="How many training processes the command starts (1-8).")
    saves: Literal["adapter", "full"] = Field(description="What it must save in {output}: a PEFT adapter whose LoRA B "
                                              "tensors all left zero, or a full model whose weights differ from the "
                                              "initial ones.")
    evidence: RawTrainingEvidence = Field(default_factory=RawTrainingEvidence,
                                          description="Evidence required on every target.")
    targets: dict[Target, RawTrainingTarget] = Field(description="The targets it runs on, each with its own "
                                                     "arguments (the cuda entry is the GPU variant).")


def _advisory_id(value: str) -> str:
    if not re.fullmatch(r"[A-Z][A-Z0-9]*-[A-Za-z0-9][A-Za-z0-9._:-]*", value):
        raise ValueError(f"'{value}' is not an advisory id || write it as PyPI's data names it, e.g. "
                         "PYSEC-2017-94, GHSA-cq27-v7xp-c356 or CVE-2013-7459")
    return value


def _reason(value: str) -> str:
    if len(value.split()) < 4:
        raise ValueError(f"'{value}' is not a reason || say in a sentence why this image may carry it (the "
                         "vulnerable code is not used, no fix exists for this release's pins, ...)")
    return value


class RawAuditAllow(Strict):
    """A known vulnerability this release may carry, with why and until when (`stackbuild audit`)."""

    id: Annotated[str, AfterValidator(_advisory_id)] = Field(description="The advisory's id or one of its "
                                                              "aliases, as PyPI's vulnerability data names it.")
    reason: Annotated[OneLine, AfterValidator(_reason)] = Field(description="Why the image may carry it, in a "
                                                                "sentence a reviewer can check.")
    expires: IsoDate = Field(description="The date after which the entry no longer counts: audit fails on an "
                             "expired entry until someone looks again.")


class RawHeld(Strict):
    """A pin this release keeps below the newest version of its date, and why (`stackbuild propose` writes these)."""

    package: str = Field(description="The held package, as the release pins it (torch: the release's torch field).")
    at: VersionText = Field(description="The version the release pins.")
    newest: VersionText = Field(description="The newest version the index offered as of the release's date.")
    why: OneLine = Field(description="Why it cannot move: the compatibility rule, the resolver's conflict, or the "
                         "build or smoke check that failed with the newer version.")
    evidence: list[OneLine] = Field([], description="The failing evidence, line by line: the resolver's error, the "
                                    "failing check's output or the build error (the proposal's report has it whole).")
    issue: IssueId | None = Field(None, description="The known issue (stacks/known-issues.yaml) behind it, if any.")
    references: list[Reference] = Field([], description="Public threads behind it (owner/repo#number).")


class RawRelease(Strict):
    summary: OneLine
    date: IsoDate
    era: bool = False
    notes: list[OneLine] = []
    torch: VersionText
    # each registered accelerator's version field (builder/profile/accelerators.py: "cuda: 12.8"), taken by
    # _accelerator_fields below and shown in the JSON schema after torch (_accelerator_schema)
    with_torch: list[str] = []
    bootstrap: list[str]
    targets: dict[Target, RawTarget]
    apt: list[str] = []
    compiled: list[RawCompiled] = []
    packages: list[str | RawPackage] = []
    last_packages: list[str | RawPackage] = Field(
        default=[], description="The stack's own top-level pins (e.g. peft): installed after every other pin, in a "
        "layer of their own, so bumping one rebuilds only that layer.")
    patches: list[RawPatch] = []
    env: dict[str, str] = {}
    fixes: list[RawFix] = []
    checks: list[CheckName] = Field([], description="Smoke checks this release carries besides the common ones "
                                                     "and those that prove its fixes")
    options: dict[str, RawOption] = {}
    declined: dict[str, RawDeclined] = Field({}, description="Options asked for but not shipped, each with why and "
                                             "what to use instead; --with NAME names them.")
    namesake: RawNamesakeRun | None = Field(None, description="The commit of the stack's namesake project that "
                                           "this release runs (required when the stack names one).")
    training: list[RawTraining] = Field([], description="Today's training code this release runs, offline, on a tiny "
                                        "model and data it makes (`stackbuild test --training`); an unable namesake "
                                        "script names the entry that runs in its place.")
    audit_allow: list[RawAuditAllow] = Field([], description="Known vulnerabilities of the locked packages that "
                                             "this release may carry, each with its reason and expiry date.")
    held: list[RawHeld] = Field([], description="Pins kept below the newest version of the release's date, each "
                                "with why and its evidence; `stackbuild show` prints them.")
    multinode: bool = Field(False, description="Ready for multi-node training: sshd with host keys made when a "
                            "container starts, pdsh, the RDMA user-space libraries and NCCL defaults, in one small "
                            "layer after torch, and the multinode smoke check (see README, Multi-node).")
    # The version field of each registered accelerator (builder/profile/accelerators.py) the release sets
    _accelerator_versions: dict[str, str] = PrivateAttr(default_factory=dict)
    model_config = ConfigDict(json_schema_extra=lambda schema, cls: _accelerator_schema(schema))

    @model_validator(mode="wrap")
    @classmethod
    def _accelerator_fields(cls, data: Any, handler: Any) -> Any:
        """Take each registered accelerator's version field, checked as X.Y (an error is located at the field).

        None is required here: a target with an accelerator needs its field (the loader names it)."""
        extra: dict[str, str] = {}
        if isinstance(data, dict):
            for name in sorted(_accelerator_fields() & set(data)):
                try:
                    extra[name] = _MAJOR_MINOR.validate_python(data[name], strict=True)
                except ValidationError as exc:
                    raise ValidationError.from_exception_data(cls.__name__, [
                        {**error, "loc": (name, *error["loc"])} for error in exc.errors()]) from None
            data = {k: v for k, v in data.items() if k not in extra}
        model = handler(data)
        model._accelerator_versions.update(extra)
        return model

    def accelerator_version(self, field_name: str) -> str | None:
        """The release's value of an accelerator's version field, None when it has none."""
        return self._accelerator_versions.get(field_name)

    @classmethod
    def field_names(cls) -> set[str]:
        return super().field_names() | _accelerator_fields()


_MAJOR_MINOR: TypeAdapter[str] = TypeAdapter(MajorMinor)


def _accelerator_fields() -> set[str]:
    return {a.version_field for a in ACCELERATORS.values()}


def _accelerator_schema(schema: dict[str, Any]) -> None:
    """A release's JSON schema lists each registered accelerator's version field after torch, as a string
    "X.Y"; the default target's accelerator field is listed as required (every shipped release targets it;
    the loader itself asks only for the fields of the accelerators a release's targets use)."""
    default = targets.target(targets.DEFAULT).accelerator_entry
    fields = [a.version_field for a in ACCELERATORS.values()]
    properties = {}
    for key, value in schema["properties"].items():
        properties[key] = value
        if key == "torch":
            properties.update({name: {"title": name.replace("_", " ").title(), "type": "string"} for name in fields})
    schema["properties"] = properties
    if default is not None:
        required = schema["required"]
        required.insert(required.index("torch") + 1, default.version_field)


class RawStackHead(Strict):
    name: str
    title: OneLine
    description: str
    requires_python: str | None = None
    default_release: str
    notes: list[OneLine] = []
    apt: list[str] = []
    files: dict[str, RawFile] = {}
    fixes: list[RawFix] = []
    checks: list[CheckName] = Field([], description="Smoke checks every release carries besides the common ones "
                                                     "and those that prove its fixes")
    namesake: RawNamesake | None = Field(None, description="The project the stack is named after, whose own "
                                        "training scripts every release runs (or says why it cannot).")
    releases: dict[Any, Any]


class RawStack(RawStackHead):
    """The whole file, for `stackbuild schema`."""

    releases: dict[str, RawRelease]  # type: ignore[assignment]
