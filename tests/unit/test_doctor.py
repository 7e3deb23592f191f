"""doctor: known issues recognised in real log excerpts, clean logs left alone, host and model checks.

Every file tests/unit/fixtures/logs/<issue-id>--<n>.log is an excerpt quoted from the public thread
named on its first line (`# source: owner/repo#N (...)`); its second line says which line the
diagnosis must point at. Files under clean/ are synthetic successful runs and must give nothing.
"""

from __future__ import annotations

import io
import os
import re
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.doctor.diagnose import (
    EngineInfo,
    HostCheck,
    check_host,
    check_model,
    diagnose,
    diagnose_file,
    strip_ansi,
)
from builder.errors import DoctorError, EngineUnavailable, ProfileError
from builder.profile.knowledge import load_knowledge_base
from builder.profile.load import load_stack

LOGS = Path(__file__).parent / "fixtures" / "logs"
FIXTURES = sorted(LOGS.glob("*--*.log"))
CLEAN = sorted((LOGS / "clean").glob("*.log"))
SOURCE = re.compile(r"^# source: [A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+#\d+ \(.+\)$|^# source: [A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+#\d+$")
# Failure entries with no public log excerpt found: none. An entry without one is an advisory with no
# patterns instead (ds-march-native: no public thread quotes the SIGILL next to DeepSpeed's CPU ops).
NO_PUBLIC_LOG: dict[str, str] = {}
ORIGINAL_IDS = {
    "ds-aio-precompile", "ds-sparse-attn-torch2", "ds-era-pin", "fa-build-no-torch", "fastchat-functools-cache",
    "fsdp-save-oom", "fa-fp32", "fa-ampere-only", "fa1-headdim-sm86", "bnb-cpu-lib", "qlora-transformers-too-old",
    "peft-empty-adapter", "qlora-throughput", "llama-decapoda-tokenizer", "host-oom-killed",
    "cuda-device-side-assert", "torch-compile-py311", "ds-cpu-accelerator-build", "ds-ninja-missing",
    "ds-cpu-adam-build", "ds-march-native", "ds-pydantic2", "numpy2-old-torch", "torch-cu117-no-sm90",
    "cuda-version-mismatch", "cuda-home-missing", "fa-undefined-symbol", "xformers-mismatch",
    "datasets-fsspec-drift", "peft-int8-removed", "bnb-cuda-setup-failed", "nccl-shm",
}


def _expected(path: Path) -> tuple[str, int]:
    header = path.read_text(encoding="utf-8").splitlines()
    return path.name.split("--")[0], int(header[1].removeprefix("# expect-line: "))


# -- the knowledge base -----------------------------------------------------------------------


def test_knowledge_base_size_and_original_entries():
    kb = load_knowledge_base()
    assert len(kb) >= 62
    assert ORIGINAL_IDS <= set(kb)
    for issue in kb.values():
        if issue.kind == "failure":
            assert issue.patterns, issue.id


def test_every_failure_entry_has_a_real_log_fixture(capsys):
    kb = load_knowledge_base()
    counts: dict[str, int] = {}
    for path in FIXTURES:
        counts[path.name.split("--")[0]] = counts.get(path.name.split("--")[0], 0) + 1
    assert set(counts) <= set(kb), set(counts) - set(kb)
    failures = {i.id for i in kb.values() if i.kind == "failure"}
    assert failures - set(counts) == set(NO_PUBLIC_LOG)
    single = sorted(i for i in failures if counts.get(i) == 1)
    with capsys.disabled():
        print(f"\ndoctor fixtures: {len(FIXTURES)} logs for {len(counts)} entries; only one real excerpt: "
              f"{', '.join(single)}; none: {', '.join(sorted(NO_PUBLIC_LOG))}")


def test_entry_without_a_public_log_is_an_advisory_doctor_never_reports():
    issue = load_knowledge_base()["ds-march-native"]
    assert (issue.kind, issue.symptom, issue.patterns, issue.context) == ("advisory", None, (), ())
    assert "build-host-cpu" in issue.fix
    log = "DeepSpeedCPUAdam: using cpu_adam\nIllegal instruction (core dumped)\n"
    assert diagnose(log, stack="deepspeed-zero3-offload", release="2023.06") == []


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_names_its_public_source(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert SOURCE.match(first), first


# -- logs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_real_log_is_diagnosed_as_its_issue(path):
    issue, line = _expected(path)
    found = diagnose(path.read_text(encoding="utf-8"))
    assert found, "no diagnosis"
    assert (found[0].issue.id, found[0].first_line) == (issue, line), [(d.issue.id, d.first_line) for d in found]


@pytest.mark.parametrize("path", CLEAN, ids=lambda p: p.stem)
def test_clean_log_gives_no_diagnosis(path):
    assert path.read_text(encoding="utf-8").startswith("# clean: synthetic")
    assert diagnose(path.read_text(encoding="utf-8")) == []


def test_precision_and_recall_over_all_fixtures(capsys):
    true_pos = false_pos = false_neg = 0
    for path in FIXTURES:
        issue, _ = _expected(path)
        found = diagnose(path.read_text(encoding="utf-8"))
        if found and found[0].issue.id == issue:
            true_pos += 1
        else:
            false_neg += 1
            false_pos += bool(found)
    for path in CLEAN:
        false_pos += bool(diagnose(path.read_text(encoding="utf-8")))
    precision = true_pos / (true_pos + false_pos)
    recall = true_pos / (true_pos + false_neg)
    with capsys.disabled():
        print(f"\ndoctor: precision {precision:.3f}, recall {recall:.3f} "
              f"({len(FIXTURES)} failure logs, {len(CLEAN)} clean logs)")
    assert precision == recall == 1.0


def test_ansi_colours_are_stripped():
    assert strip_ansi("\x1b[93m [WARNING] \x1b[0m x") == " [WARNING]  x"
    found = diagnose("\x1b[91mRuntimeError: Ninja is required to load C++ extensions\x1b[0m\n")
    assert [d.issue.id for d in found] == ["ds-ninja-missing"]


def test_generic_line_needs_its_context():
    alone = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'torch'\n"
    assert diagnose(alone) == []
    near = "  Getting requirements to build wheel ... error\n" + alone
    assert [(d.issue.id, d.first_line, d.confidence) for d in diagnose(near)] == [("fa-build-no-torch", 3, 0.8)]
    far = "  Getting requirements to build wheel ... error\n" + "ok\n" * 100 + alone
    assert diagnose(far) == []


def test_decisive_line_far_above_the_traceback_ranks_first():
    log = ("Installed CUDA version 12.1 does not match the version torch was compiled with 11.8\n"
           + "{'loss': 1.0}\n" * 5000
           + "AttributeError: 'DeepSpeedCPUAdam' object has no attribute 'ds_opt_adam'\n")
    found = diagnose(log)
    assert [(d.issue.id, d.first_line) for d in found] == [("cuda-version-mismatch", 1), ("ds-cpu-adam-build", 5002)]
    assert found[0].confidence > found[1].confidence


def test_specific_entry_outranks_the_generic_one_on_the_same_line():
    log = ("  File \"/x/torch/distributed/fsdp/_state_dict_utils.py\", line 309, in _full_post_state_dict_hook\n"
           "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 502.00 MiB\n")
    found = diagnose(log)
    assert [(d.issue.id, d.confidence) for d in found] == [("fsdp-save-oom", 0.8), ("cuda-oom", 0.3)]


def test_stack_selects_the_era_fix_and_raises_confidence():
    log = "AssertionError: Unable to pre-compile async_io\n"
    plain = diagnose(log)[0]
    era = diagnose(log, stack="deepspeed-zero3-offload", release="2023.06")[0]
    current = diagnose(log, stack="deepspeed-zero3-offload", release="2026.11")[0]
    other = diagnose(log, stack="qlora", release="2023.07")[0]
    assert plain.fix == current.fix == plain.issue.fix
    assert era.fix.startswith("apt-get install -y libaio-dev before pip install deepspeed==0.9.3")
    assert (plain.confidence, era.confidence, other.confidence) == (0.6, 0.7, 0.5)


def test_era_release_gets_the_pin_it_must_keep():
    log = "ImportError: cannot import name 'Cache' from 'transformers'\n"
    plain = diagnose(log)[0]
    era = diagnose(log, stack="qlora", release="2023.07")[0]
    assert plain.issue.id == era.issue.id == "peft-too-new-for-transformers"
    assert plain.fix.startswith("Upgrade transformers")
    assert era.fix == ("Keep transformers==4.31.0 and reinstall peft==0.4.0, this release's pin and qlora's own "
                       "requirement.")


def test_diagnosis_reports_lines_and_excerpt():
    log = "a\nb\nRuntimeError: CUDA error: device-side assert triggered\nc\nd\ne\n" * 30
    found = diagnose(log)[0]
    assert found.first_line == 3
    assert found.excerpt == ((1, "a"), (2, "b"), (3, "RuntimeError: CUDA error: device-side assert triggered"),
                             (4, "c"), (5, "d"))
    assert len(found.lines) == 20 and found.lines[:2] == (3, 9)
    assert found.to_dict()["id"] == "cuda-device-side-assert"


def test_a_huge_single_line_is_matched_around_the_hit():
    log = "x" * 3_000_000 + " RuntimeError: Ninja is required to load C++ extensions " + "y" * 3_000_000
    found = diagnose(log)
    assert [(d.issue.id, d.first_line) for d in found] == [("ds-ninja-missing", 1)]
    assert found[0].excerpt[0][1].endswith("...")


def test_diagnose_file_reads_files_and_stdin(tmp_path, monkeypatch):
    log = tmp_path / "build.log"
    log.write_text("error: externally-managed-environment\n")
    assert [d.issue.id for d in diagnose_file(log)] == ["pip-externally-managed"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Ninja is required to load C++ extensions\n")))
    assert [d.issue.id for d in diagnose_file("-")] == ["ds-ninja-missing"]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing.log",
         "log file not found: {p}/missing.log (check the path, or pass - to read the log from standard input)"),
        (lambda p: p,
         "{p} is a directory, not a log file (pass the log file itself; for a model folder use --model)"),
        (lambda p: (p / "x.gz").write_bytes(b"\x1f\x8b\x08\x00\x00") and p / "x.gz",
         "{p}/x.gz looks binary (it contains NUL bytes); doctor reads text logs (pass the build or training "
         "output, e.g. the log file a failed build names; decompress .gz logs first)"),
    ],
    ids=["missing", "directory", "binary"],
)
def test_diagnose_file_errors(make, expected, tmp_path):
    path = make(tmp_path)
    with pytest.raises(DoctorError) as info:
        diagnose_file(path)
    assert str(info.value) == expected.format(p=tmp_path)
    assert info.value.exit_code == 11


# -- bad knowledge bases -----------------------------------------------------------------------

GOOD = """issues:
  - id: one
    title: One
    kind: failure
    stacks: [qlora]
    symptom: "Boom"
    cause: c
    fix: f
    prevention: p
    patterns: ['Boom goes the build']
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("'Boom goes the build'", "'Boom (goes'"),
         "kb.yaml:10: issues[0].patterns[0]: pattern 'Boom (goes' is not a valid regular expression: missing ), "
         "unterminated subpattern at position 5 (fix the syntax: Python re, with literal . ( ) [ ] + * ? escaped "
         "by a backslash)"),
        (GOOD.replace("'Boom goes the build'", "'Boom (a+)+'"),
         "kb.yaml:10: issues[0].patterns[0]: pattern 'Boom (a+)+' nests a repeat inside a repeat, which can take "
         "exponential time (rewrite it without nested quantifiers, e.g. '(a+)+' as 'a+')"),
        (GOOD.replace("'Boom goes the build'", "'Boom(.*)*'"),
         "kb.yaml:10: issues[0].patterns[0]: pattern 'Boom(.*)*' nests a repeat inside a repeat, which can take "
         "exponential time (rewrite it without nested quantifiers, e.g. '(a+)+' as 'a+')"),
        (GOOD.replace("'Boom goes the build'", "'Boom (a|ab)*'"),
         "kb.yaml:10: issues[0].patterns[0]: pattern 'Boom (a|ab)*' repeats an alternation, which can take "
         "exponential time (use a character class or split it into separate patterns)"),
        (GOOD.replace("'Boom goes the build'", "'Boom.*a.*b.*c'"),
         "kb.yaml:10: issues[0].patterns[0]: pattern 'Boom.*a.*b.*c' has 3 '.*' or '.+', more than 2 (replace "
         "some with the fixed text that is really there)"),
        (GOOD.replace("'Boom goes the build'", "'\\\\w+: \\\\d+'"),
         "kb.yaml:10: issues[0].patterns[0]: pattern '\\\\w+: \\\\d+' has no fixed text of at least 4 characters "
         "outside optional parts (include a literal piece of the message, e.g. its first words)"),
        (GOOD.replace("'Boom goes the build'", "'(?i)boom goes'"),
         "kb.yaml:10: issues[0].patterns[0]: pattern '(?i)boom goes' sets inline flags (remove (?i)/(?s)/(?m)/(?x); "
         "patterns are case-sensitive and see one line at a time)"),
        (GOOD + "    fix_era:\n      nosuch@2023.06: x\n",
         "kb.yaml:12: issues[0].fix_era.nosuch@2023.06: 'nosuch' is not a stack (use one of: alpaca-lora, "
         "deepspeed-zero3-offload, flash-attn-fsdp, qlora)"),
        (GOOD + "    fix_era:\n      qlora@1999.01: x\n",
         "kb.yaml:12: issues[0].fix_era.qlora@1999.01: stack 'qlora' has no release '1999.01' (use one of: "
         "2023.05, 2023.07, 2026.11, 2026.12)"),
        (GOOD + "    fix_era:\n      qlora: x\n",
         "kb.yaml:12: issues[0].fix_era.qlora: 'qlora' is not STACK@RELEASE (write the key like qlora@2023.07)"),
        (GOOD.replace("stacks: [qlora]", "stacks: [qlorra]"),
         "kb.yaml:5: issues[0].stacks[0]: 'qlorra' is not a stack (use 'any' or one of: alpaca-lora, "
         "deepspeed-zero3-offload, flash-attn-fsdp, qlora)"),
        (GOOD.replace("    patterns: ['Boom goes the build']\n", ""),
         "kb.yaml:2: issues[0].patterns: a failure needs at least one log pattern (add 'patterns' with a regex for "
         "the line users see, or make it kind: advisory)"),
        (GOOD + "    proven_by: ['Smoke Check']\n",
         "kb.yaml:11: issues[0].proven_by[0]: 'Smoke Check' is not a smoke check name (use lowercase letters, "
         "digits and '-')"),
        (GOOD + "    proven_by: [lora-saves]\n",
         "kb.yaml:11: issues[0].proven_by[0]: there is no smoke check 'lora-saves' (did you mean 'lora-save'? checks "
         "are listed in builder/smoke/checks.py)"),
        (GOOD.replace("    cause: c\n", "    cause: c\n    patern: x\n"),
         "kb.yaml:8: issues[0].patern: unknown field (did you mean 'patterns'? allowed: cause, context, "
         "context_window, fix, fix_era, fixed_in, generic, id, kind, patterns, prevented_by, prevention, proven_by, "
         "references, seed, stacks, symptom, title)"),
    ],
    ids=["bad-regex", "nested-repeat", "nested-wildcard", "repeated-alternation", "three-wildcards", "no-literal",
         "inline-flags", "era-unknown-stack", "era-unknown-release", "era-bad-key", "unknown-stack",
         "failure-without-patterns", "bad-check-name", "unknown-check", "unknown-field"],
)
def test_bad_knowledge_base(text, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = Path("kb.yaml")
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_knowledge_base(path.resolve())
    assert [str(p) for p in info.value.problems] == [expected]


# -- host ---------------------------------------------------------------------------------------


def _engine(runtimes=("nvidia", "runc")):
    return lambda: EngineInfo(version="27.3.1", address="unix:///var/run/docker.sock", runtimes=tuple(runtimes))


def _no_engine():
    raise EngineUnavailable("no Docker engine at unix:///var/run/docker.sock: connection refused\nstart it")


def _smi(*rows):
    def run(args):
        assert args == ["--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]
        return "".join(row + "\n" for row in rows)
    return run


def _no_smi(args):
    raise FileNotFoundError("nvidia-smi")


@pytest.fixture
def meminfo(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       65536000 kB\nMemFree:         1000000 kB\nMemAvailable:   60000000 kB\n")
    return path


def _by_name(checks: list[HostCheck]) -> dict[str, tuple[str, str]]:
    return {c.name: (c.status, c.detail) for c in checks}


def test_host_without_gpu_or_engine_says_what_it_could_not_check(meminfo, tmp_path):
    checks = _by_name(check_host(None, engine_probe=_no_engine, nvidia_smi=_no_smi, meminfo_path=meminfo,
                                 shm_path=tmp_path, disk_path=tmp_path))
    assert checks["engine"] == ("fail", "no Docker engine at unix:///var/run/docker.sock: connection refused")
    assert checks["nvidia-runtime"] == ("unknown", "no Docker engine answered, so its runtimes are unknown")
    assert checks["driver"] == ("unknown", "nvidia-smi not found: no NVIDIA driver on this host (GPU checks "
                                           "skipped; the cpu target still works)")
    assert checks["gpu"] == ("unknown", "nvidia-smi not found: no NVIDIA driver on this host")
    assert checks["ram"] == ("ok", "62.5 GiB total, 57.2 GiB available")
    assert checks["shm"][0] == "ok" and checks["disk"][0] in ("ok", "fail")
    assert "a cpu image needs about 10 GiB" in checks["disk"][1]


def test_host_with_a_supported_gpu(meminfo, tmp_path):
    stack = load_stack("flash-attn-fsdp")  # 2026.11: torch 2.10's CUDA 12.8, whose driver minimum the table has
    checks = _by_name(check_host(stack, "2026.11", engine_probe=_engine(), nvidia_smi=_smi("NVIDIA H100 80GB HBM3, 9.0, 570.86.15"),
                                 meminfo_path=meminfo, shm_path=tmp_path, disk_path=tmp_path))
    assert checks["engine"] == ("ok", "Docker 27.3.1 at unix:///var/run/docker.sock")
    assert checks["nvidia-runtime"] == ("ok", "runtimes: nvidia, runc")
    assert checks["driver"] == ("ok", "NVIDIA driver 570.86.15 >= 570.26, the CUDA 12.8 minimum per NVIDIA's "
                                      "CUDA toolkit release notes")
    assert checks["gpu0"] == ("ok", "NVIDIA H100 80GB HBM3, compute capability 9.0")


@pytest.mark.parametrize(
    ("release", "gpu", "status", "detail"),
    [
        ("2026.11", "Tesla V100-SXM2-32GB, 7.0, 570.86.15", "fail",
         "Tesla V100-SXM2-32GB, compute capability 7.0: flash-attn 2 needs sm80 or newer"),
        ("2023.06", "NVIDIA GeForce RTX 4090, 8.9, 570.86.15", "warn",
         "NVIDIA GeForce RTX 4090, compute capability 8.9: flash-attn 1.x backward with head_dim > 64 (every "
         "LLaMA) runs only on sm80/sm90"),
        ("2023.06", "NVIDIA A100-SXM4-80GB, 8.0, 570.86.15", "ok", "NVIDIA A100-SXM4-80GB, compute capability 8.0"),
    ],
)
def test_gpu_capability_against_flash_attn(release, gpu, status, detail, meminfo, tmp_path):
    checks = _by_name(check_host(load_stack("flash-attn-fsdp"), release, engine_probe=_engine(),
                                 nvidia_smi=_smi(gpu), meminfo_path=meminfo, shm_path=tmp_path, disk_path=tmp_path))
    assert checks["gpu0"] == (status, detail)


@pytest.mark.parametrize(
    ("driver", "status", "detail"),
    [
        ("560.35.03", "warn", "NVIDIA driver 560.35.03 is below 570.26 (minimum per NVIDIA's CUDA toolkit release "
         "notes for CUDA 12.8) but within CUDA 12.x minor-version compatibility (>= 525.60.13); PTX JIT and some "
         "newer features will fail"),
        ("470.82.01", "fail", "NVIDIA driver 470.82.01 is too old for CUDA 12.8 (needs 570.26, minimum per "
         "NVIDIA's CUDA toolkit release notes)"),
    ],
)
def test_old_driver(driver, status, detail, meminfo, tmp_path):
    checks = check_host(load_stack("qlora"), "2026.11", engine_probe=_engine(),
                        nvidia_smi=_smi(f"NVIDIA A100-SXM4-80GB, 8.0, {driver}"), meminfo_path=meminfo,
                        shm_path=tmp_path, disk_path=tmp_path)
    driver_check = next(c for c in checks if c.name == "driver")
    assert (driver_check.status, driver_check.detail) == (status, detail)
    assert driver_check.fix == "update the NVIDIA driver to 570.26 or newer, or choose a release built for an older CUDA"


def test_small_shm_missing_runtime_and_full_disk(meminfo, tmp_path, monkeypatch):
    import builder.doctor.diagnose as doctor

    monkeypatch.setattr(doctor.os, "statvfs", lambda p: SimpleNamespace(f_blocks=16384, f_frsize=4096))
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda p: SimpleNamespace(free=5 * 1024 ** 3))
    checks = {c.name: c for c in check_host(None, engine_probe=_engine(("runc",)),
                                            nvidia_smi=_smi("NVIDIA A100-SXM4-80GB, 8.0, 570.86.15"),
                                            meminfo_path=meminfo, shm_path="/dev/shm", disk_path=tmp_path)}
    assert (checks["shm"].status, checks["shm"].detail) == (
        "warn", "/dev/shm is 0.06 GiB (< 1 GiB): NCCL and DataLoader workers fail with shared-memory errors (nccl-shm)")
    assert checks["nvidia-runtime"].status == "warn"
    assert checks["nvidia-runtime"].fix.startswith("install the NVIDIA Container Toolkit")
    assert (checks["disk"].status, checks["disk"].detail) == (
        "fail", f"5.0 GiB free at {tmp_path}; a cuda image needs about 20 GiB")


def test_unreadable_meminfo_is_unknown(tmp_path):
    checks = _by_name(check_host(None, engine_probe=_no_engine, nvidia_smi=_no_smi,
                                 meminfo_path=tmp_path / "nope", shm_path=tmp_path, disk_path=tmp_path))
    assert checks["ram"] == ("unknown", f"cannot read MemTotal/MemAvailable from {tmp_path / 'nope'}")


# -- model folders ------------------------------------------------------------------------------

LLAMA_CONFIG = ('{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, '
                '"bos_token_id": 1, "eos_token_id": 2}')
DECAPODA_CONFIG = ('{"architectures": ["LLaMAForCausalLM"], "model_type": "llama", "vocab_size": 32000, '
                   '"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": -1}')


def _model(tmp_path, config=LLAMA_CONFIG, tokenizer='{"tokenizer_class": "LlamaTokenizer"}', shards=(1024,)):
    root = tmp_path / "model"
    root.mkdir()
    (root / "config.json").write_text(config)
    (root / "tokenizer_config.json").write_text(tokenizer)
    header = b'{"__metadata__": {"format": "pt"}}'
    for n, size in enumerate(shards, 1):
        with open(root / f"model-{n:05d}-of-{len(shards):05d}.safetensors", "wb") as f:
            f.write(struct.pack("<Q", len(header)) + header)  # a valid safetensors header
            f.truncate(size)  # sparse: only the size matters
    return root


def _meminfo(tmp_path, available_gib):
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal: {64 * 1024 * 1024} kB\nMemAvailable: {int(available_gib * 1024 * 1024)} kB\n")
    return path


def test_healthy_model_folder(tmp_path):
    checks = _by_name(check_model(_model(tmp_path, shards=(4 * 1024 ** 3, 3 * 1024 ** 3)),
                                  meminfo_path=_meminfo(tmp_path, 60)))
    assert checks == {
        "weights": ("ok", "2 weight file(s), 7.0 GiB in all; largest model-00001-of-00002.safetensors 4.00 GiB"),
        "memory-for-weights": ("ok", "60.0 GiB available for 7.0 GiB of weights"),
        "tokenizer": ("ok", "LlamaTokenizer: special tokens look consistent"),
    }


def test_largest_shard_against_available_ram(tmp_path):
    checks = {c.name: c for c in check_model(_model(tmp_path, shards=(10 * 1024 ** 3, 3 * 1024 ** 3)),
                                             meminfo_path=_meminfo(tmp_path, 16))}
    memory = checks["memory-for-weights"]
    assert (memory.status, memory.detail) == (
        "fail", "loading needs about twice the largest shard (20.0 GiB) but only 16.0 GiB is available: the kernel "
                "will kill the process with a bare 'Killed' (host-oom-killed)")
    assert memory.fix.startswith("re-save with smaller shards")


def test_decapoda_tokenizer_is_flagged(tmp_path):
    root = _model(tmp_path, config=DECAPODA_CONFIG, tokenizer='{"tokenizer_class": "LLaMATokenizer"}')
    (root / "special_tokens_map.json").write_text('{"bos_token": "", "eos_token": "", "unk_token": ""}')
    tokenizer = next(c for c in check_model(root, meminfo_path=_meminfo(tmp_path, 60)) if c.name == "tokenizer")
    assert tokenizer.status == "fail"
    assert tokenizer.detail == (
        "decapoda-style LLaMA conversion (llama-decapoda-tokenizer): tokenizer_class is LLaMATokenizer, the "
        "pre-release name of the decapoda conversion; config.json has bos_token_id=0, eos_token_id=1; LLaMA's are "
        "1 and 2, so the EOS appended in training is never the real one; bos_token is an empty string; eos_token is "
        "an empty string")
    assert "set bos_token_id=1, eos_token_id=2, pad_token_id=0" in tokenizer.fix


def test_lfs_pointers_and_missing_shards(tmp_path):
    root = _model(tmp_path)
    (root / "model-00001-of-00001.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 4938985248\n")
    (root / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00001.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    weights = [(c.status, c.detail) for c in check_model(root, meminfo_path=_meminfo(tmp_path, 60))
               if c.name == "weights"]
    assert weights == [
        ("fail", "the index lists 1 shard(s) the folder lacks: model-00002-of-00002.safetensors"),
        ("fail", "1 weight file(s) are Git LFS pointers, not weights: model-00001-of-00001.safetensors "
                 "(weights-lfs-pointer)"),
    ]


def test_model_folder_errors(tmp_path):
    with pytest.raises(DoctorError) as info:
        check_model(tmp_path / "none")
    assert str(info.value) == (f"model folder not found: {tmp_path / 'none'} (pass the directory that holds "
                               "config.json and the weight files)")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DoctorError, match=r"is not a directory \(pass the model folder, not a single file\)"):
        check_model(tmp_path / "file")


def test_doctor_does_not_import_docker_or_transformers():
    source = "".join(p.read_text() for p in (Path(__file__).parents[2] / "builder" / "doctor").glob("*.py"))
    assert not re.search(r"^\s*(import|from)\s+(docker|transformers)\b", source, re.M)
    assert os.path.basename(__file__) == "test_doctor.py"


@pytest.mark.parametrize(
    ("driver", "status", "detail"),
    [
        ("580.159.04", "unknown", "NVIDIA driver 580.159.04; no minimum known for CUDA 13.2 (it is within CUDA 13.x "
         "minor-version compatibility, >= 580.65.06: built code runs, PTX JIT and the newest features may not)"),
        ("570.86.15", "fail", "NVIDIA driver 570.86.15 is too old for CUDA 13.2: every CUDA 13.x needs 580.65.06 or "
         "newer (its minor-version compatibility floor)"),
    ],
)
def test_a_cuda_without_a_known_minimum_is_judged_by_its_majors_floor(driver, status, detail, meminfo, tmp_path):
    """CUDA 13.2 (qlora@2026.12, torch 2.15.0's wheels) has no row in CUDA_MIN_DRIVER; every 13.x needs the 13.x
    floor, so a 570 driver fails for certain and a 580 one is within compatibility."""
    checks = check_host(load_stack("qlora"), "2026.12", engine_probe=_engine(),
                        nvidia_smi=_smi(f"NVIDIA H100 80GB HBM3, 9.0, {driver}"), meminfo_path=meminfo,
                        shm_path=tmp_path, disk_path=tmp_path)
    driver_check = next(c for c in checks if c.name == "driver")
    assert (driver_check.status, driver_check.detail) == (status, detail)
