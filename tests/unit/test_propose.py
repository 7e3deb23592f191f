"""`stackbuild propose` against an index on loopback (tests/unit/loopback_index.py), with uv, no PyPI: the newest
versions as of a date, a compatibility rule holding torch, an unresolvable pair held back with uv's error (and the
held pin climbing back to the newest that resolves), a failing check naming the move that caused it, the release
block written into the profile with its comments kept, the held pins in `show`, and bad input writing nothing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from builder.config import load_settings
from builder.lock.proposal import Verdict, propose, write_proposal
from builder.profile.load import load_stack

from .loopback_index import LoopbackIndex

PROFILE = Path(__file__).parent / "fixtures" / "propose.yaml"
BEFORE = "2026-10-01T00:00:00Z"  # before the release the proposal starts from (2026-11-28)
DATE = "2026-12-06"


@pytest.fixture
def index(monkeypatch):
    with LoopbackIndex() as served:
        served.add("pip", "25.3", BEFORE)
        served.add("torch", "2.10.0", "2026-01-21T00:00:00Z")
        served.add("torch", "2.11.0", "2026-03-20T00:00:00Z")
        served.add("torch", "2.12.0", "2026-06-10T00:00:00Z")  # no row in builder/profile/versions.py
        served.add("app", "1.0", BEFORE, ("dep<2",))
        served.add("app", "1.1", "2026-12-01T00:00:00Z", ("dep<2",))
        served.add("app", "2.0", "2026-12-20T00:00:00Z")  # after the date: not proposed
        served.add("dep", "1.0", BEFORE)
        served.add("dep", "2.0", BEFORE)
        served.add("lib", "1.0", BEFORE, ("dep",))
        served.add("lib", "1.5", "2026-12-02T00:00:00Z", ("dep<2",))
        served.add("lib", "2.0", "2026-12-03T00:00:00Z", ("dep>=2",))  # does not resolve with app's dep<2
        monkeypatch.setenv("STACKBUILD_PIP_INDEX_URL", served.url)
        monkeypatch.delenv("STACKBUILD_PIP_EXTRA_INDEX_URL", raising=False)
        monkeypatch.setenv("UV_NO_CACHE", "1")
        yield served


@pytest.fixture
def stack(tmp_path):
    shutil.copy(PROFILE, tmp_path / "propose.yaml")
    return tmp_path / "propose.yaml"


@pytest.fixture(autouse=True)
def no_scratch_left(monkeypatch, tmp_path):
    """Every proposal's scratch folder goes: written, failed or discarded (here: under the test's own tmp)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    yield
    assert [p.name for p in scratch.iterdir() if p.name.startswith("stackbuild-propose-")] == []


def _propose(stack: Path, **kwargs):
    proposal = propose(str(stack), DATE, build=False, settings=load_settings(), **kwargs)
    return proposal


def _subsequence(lines: list[str], of: list[str]) -> bool:
    found = iter(of)
    return all(any(line == other for other in found) for line in lines)


def test_the_newest_versions_as_of_the_date_with_torch_held_by_its_table_and_a_conflict_held_by_uv(index, stack):
    proposal = _propose(stack)
    assert proposal.ok, proposal.failure
    decisions = {d.name: (d.current, d.chosen, d.newest) for d in proposal.decisions.values()}
    assert decisions == {"torch": ("2.10.0", "2.11.0", "2.12.0"), "pip": ("25.3", "25.3", "25.3"),
                         "app": ("1.0", "1.1", "1.1"),  # 2.0 came after the date
                         "lib": ("1.0", "1.5", "2.0")}  # held back from 2.0, then climbed to the newest that resolves
    torch = proposal.decisions["torch"]
    assert torch.step == "rule" and "torch 2.12.0 has no row in builder/profile/versions.py" in torch.why
    assert proposal.cuda == ("12.8", "13.0")  # PyPI's torch 2.11 carries CUDA 13
    lib = proposal.decisions["lib"]
    assert lib.step == "resolve" and "lib 2.0 does not resolve together" in lib.why
    said = " ".join(lib.evidence)  # uv's own words
    assert "No solution found" in said and "lib==2.0" in said and "dep" in said, lib.evidence
    proposal.discard()


def test_the_release_block_is_written_with_the_files_comments_and_its_locks(index, stack, cli):
    before = stack.read_text()
    proposal = _propose(stack)
    written = write_proposal(proposal)
    assert written == ["locks/propose@2026.12-cpu.txt", "propose.yaml"] or all(
        w.endswith(("propose@2026.12-cpu.txt", "propose.yaml")) for w in written)
    after = stack.read_text()
    assert _subsequence(before.splitlines(), after.splitlines())  # every line of the file is still there, in order
    block = after.split('  "2026.12":\n', 1)[1].split("# a comment after the last release", 1)[0]
    assert "    # torch's comment stays where it is\n    torch: \"2.11.0\"\n" in block
    assert "      - app==1.1  # app's comment stays too\n" in block and "      - lib==1.5\n" in block
    assert after.rstrip().endswith("# a comment after the last release")
    assert 'default_release: "2026.11"' in after  # not the default without --make-default
    release = load_stack(str(stack)).release("2026.12")
    assert (release.torch, release.accelerator_version("cuda"), release.date) == ("2.11.0", "13.0", DATE)
    assert [(h.package, h.at, h.newest) for h in release.held] == [("lib", "1.5", "2.0"), ("torch", "2.11.0", "2.12.0")]
    lock = stack.parent / "locks" / "propose@2026.12-cpu.txt"
    assert re.findall(r"^([a-z0-9._-]+)==(\S+)", lock.read_text(), re.M) == [
        ("pip", "25.3"), ("torch", "2.11.0"), ("app", "1.1"), ("dep", "1.0"), ("lib", "1.5")]
    code, out, err = cli("lock", "--check", f"{stack}@2026.12")
    assert code == 0, err
    # `show` prints every held pin with its reason and evidence
    code, out, err = cli("show", f"{stack}@2026.12")
    assert code == 0, err
    assert "  held: lib 1.5 (newest 2.0) - lib 2.0 does not resolve together with the rest" in out
    assert "  held: torch 2.11.0 (newest 2.12.0) - torch 2.12.0 has no row in builder/profile/versions.py" in out
    assert re.search(r"    evidence: .*lib==2\.0", out)
    code, out, err = cli("show", f"{stack}@2026.12", "--json")
    held = json.loads(out)["releases"][0]["held"]
    assert [h["package"] for h in held] == ["lib", "torch"] and held[0]["evidence"]


def test_make_default_moves_the_default_release(index, stack, cli, tmp_path):
    code, out, err = cli("propose", str(stack), "--date", DATE, "--no-build", "--make-default",
                         "--report", str(tmp_path / "report.md"))
    assert code == 0, err
    assert 'default_release: "2026.12"' in stack.read_text()
    assert load_stack(str(stack)).default_release == "2026.12"
    report = (tmp_path / "report.md").read_text()
    assert "| app | 1.0 | 1.1 | 1.1 |" in report and "### lib 1.5 (newest 2.0)" in report
    assert "lib==2.0" in report  # the resolver's error, as evidence
    assert "  lib 1.0 -> 1.5  (held: newest 2.0" in out


def test_an_extension_built_for_one_torch_holds_torch_with_the_loaders_words(index, stack):
    index.add("xformers", "0.0.34", BEFORE)  # its wheels require torch==2.10.0 (builder/profile/versions.py)
    stack.write_text(stack.read_text().replace("      - app==1.0  # app's comment stays too\n",
                                               "      - app==1.0  # app's comment stays too\n      - xformers==0.0.34\n"))
    proposal = _propose(stack)
    assert proposal.ok, proposal.failure
    torch = proposal.decisions["torch"]
    assert (torch.chosen, torch.newest, torch.step) == ("2.10.0", "2.12.0", "rule")
    assert torch.why == ("the profile's rules refuse it: xformers 0.0.34 requires torch==2.10.0, the release pins "
                         "2.11.0 (choose the xformers release built for this torch)")
    assert proposal.cuda is None  # torch stays, and so does its CUDA
    assert proposal.decisions["app"].chosen == "1.1"
    proposal.discard()


def test_a_failing_check_names_the_move_that_caused_it_and_keeps_its_output(index, stack):
    seen = []

    def check(plan):
        versions = plan.lock.versions()
        seen.append(versions["lib"])
        if versions["lib"] != "1.0":
            return Verdict(False, "smoke checks failed: lib-import", ("lib-import: ImportError: lib 1.5 broke it",))
        return Verdict(True, checks=(("lib-import", "pass", "ok"),))

    proposal = propose(str(stack), DATE, build=True, settings=load_settings(), check=check)
    assert proposal.ok, proposal.failure
    assert seen == ["1.5", "1.0"]  # lib (the last layer) is held back first, and then everything passes
    lib = proposal.decisions["lib"]
    assert (lib.chosen, lib.newest, lib.step) == ("1.0", "2.0", "check")
    assert "with lib 2.0 smoke checks failed: lib-import" in lib.why
    assert lib.evidence == ("lib-import: ImportError: lib 1.5 broke it",)
    assert proposal.decisions["app"].chosen == "1.1" and proposal.built
    proposal.discard()


def test_a_proposal_that_cannot_resolve_writes_only_its_report(index, stack, cli, tmp_path):
    index.releases["app"].clear()
    index.add("app", "1.0", BEFORE, ("ghost>=1",))  # nothing on the index provides ghost
    index.add("app", "1.1", "2026-12-01T00:00:00Z", ("ghost>=1",))
    before = stack.read_text()
    report = tmp_path / "report.md"
    code, out, err = cli("propose", str(stack), "--date", DATE, "--no-build", "--report", str(report))
    assert code == 16, out + err
    assert "error: no release proposed for propose@2026.12" in err
    assert stack.read_text() == before and not (stack.parent / "locks").exists()
    text = report.read_text()
    assert "FAILED" in text and "Nothing was written" in text and "ghost" in text


@pytest.mark.parametrize("args, code, message", [
    (["nope"], 4, "error: unknown stack 'nope'"),
    (["{stack}", "--date", "2026-02-30"], 2, "error: --date '2026-02-30' is not a date: write it as YYYY-MM-DD"),
    (["{stack}", "--date", "2999-01-01"], 2, "error: --date 2999-01-01 is in the future"),
    (["{stack}", "--date", DATE, "--name", "2026.11"], 2, "error: propose already has a release '2026.11': pass --name"),
    (["{stack}", "--date", "2026-11-03"], 2, "error: propose already has a release '2026.11' (the default name for "
                                             "2026-11-03)"),
    (["{stack}", "--name", "../x"], 2, "error: --name '../x' is not a release name"),
    (["{stack}@2026.11"], 2, "propose starts from the stack's default release"),
    (["{stack}", "--report", "{stack}.d/r.md"], 2, "does not exist"),
    ([], 2, "error: name one stack (stackbuild propose qlora) or pass --all"),
    (["{stack}", "--all"], 2, "error: name one stack (stackbuild propose qlora) or pass --all"),
])
def test_bad_input_is_a_specific_error_and_writes_nothing(cli, stack, tmp_path, args, code, message):
    before = stack.read_text()
    report = tmp_path / "report.md"
    extra = [] if "--report" in args else ["--report", str(report)]
    got, out, err = cli("propose", *[a.format(stack=stack) for a in args], *extra)
    assert got == code, out + err
    assert message in err and "Traceback" not in err
    assert stack.read_text() == before and not report.exists() and not (stack.parent / "locks").exists()


def test_held_entries_are_checked_when_the_profile_loads(cli, stack):
    text = stack.read_text().replace("    fixes: []\n", "    fixes: []\n    held:\n"
                                     "      - {package: app, at: \"0.9\", newest: \"1.1\", why: a reason}\n"
                                     "      - {package: ghost, at: \"1.0\", newest: \"2.0\", why: a reason}\n"
                                     "      - {package: lib, at: \"1.0\", newest: \"1.0\", why: a reason, issue: no-such-issue}\n")
    stack.write_text(text)
    code, _, err = cli("show", str(stack))
    assert code == 3
    assert "releases.2026.11.held[0].at: app is pinned at 1.0, not 0.9 (set at: \"1.0\")" in err
    assert "releases.2026.11.held[1].package: 'ghost' is not pinned by this release" in err
    assert "releases.2026.11.held[2].newest: 1.0 is not newer than 1.0" in err
    assert "releases.2026.11.held[2].issue: unknown known-issue id 'no-such-issue'" in err


def test_the_schema_documents_held_pins(cli):
    code, out, _ = cli("schema")
    schema = json.loads(out)
    assert "held" in schema["$defs"]["RawRelease"]["properties"]
    for name, field in schema["$defs"]["RawHeld"]["properties"].items():
        assert field.get("description"), f"RawHeld.{name} has no description"


CUDA_TARGET = """      cuda:
        base: nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
        python: "3.12"
        arch_list: ["8.0", "9.0"]
"""


def test_a_torch_move_takes_the_cuda_target_off_its_old_nvidia_base_onto_wheels(stack):
    from builder.lock.proposal import accelerator_moves

    text = stack.read_text().replace("    targets:\n", "    targets:\n" + CUDA_TARGET)
    compiled = ("    compiled:\n      - package: ext==1.0\n        why: compiled against torch\n"
                "        targets: [cuda]\n        no_build_isolation: true\n")
    stack.write_text(text.replace("    packages:\n", compiled + "    packages:\n", 1))
    release = load_stack(str(stack)).release("2026.11")
    # PyPI's torch 2.11 carries CUDA 13.0, whose compiler is on PyPI: the cuda target moves to the slim base
    assert accelerator_moves(release, "2.11.0") == ("13.0", {"cuda": ("debian:bookworm-slim", "3.11")}, "")
    assert accelerator_moves(release, "2.10.1") == (None, {}, "")  # the same CUDA: nothing moves


def test_a_cuda_base_without_a_slim_target_to_follow_holds_torch(stack):
    from builder.lock.proposal import accelerator_moves

    stack.write_text(stack.read_text().replace(
        "      cpu:\n        base: debian:bookworm-slim\n        python: \"3.11\"\n", CUDA_TARGET).replace(
        "    packages:\n", "    compiled:\n      - package: ext==1.0\n        why: compiled against torch\n"
        "        targets: [cuda]\n        no_build_isolation: true\n    packages:\n", 1))
    release = load_stack(str(stack)).release("2026.11")
    cuda, moved, why = accelerator_moves(release, "2.11.0")
    assert (cuda, moved) == (None, {})
    assert why == ("the cuda target's base nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 carries CUDA 12.8, and no slim "
                   "base is named to take CUDA 13.0 from torch's wheels")


def test_the_training_step_calls_the_runner_and_a_failing_script_is_the_evidence(monkeypatch, stack):
    """The seam to the training scripts' runner (builder/smoke/training.py): called with the image, release and
    target; a failing entry fails the verdict with its detail and the tail of its output."""
    import sys
    import types

    from builder.lock import proposal as module
    from builder.smoke.run import SmokeReport, SmokeResult

    calls = []

    def run_training(engine, image, release, target):
        calls.append((image, release.name, target))
        report = SmokeReport(image, [SmokeResult("trl-sft", "fail", "the adapter was not saved", 1.0)], 0)
        return report, {"trl-sft": "step 1\nValueError: no adapter\n"}

    monkeypatch.setitem(sys.modules, "builder.smoke.training", types.SimpleNamespace(run_training=run_training))
    runner = module.training_runner()
    assert runner is run_training
    report, logs = runner(None, "img", load_stack(str(stack)).release("2026.11"), "cpu")
    assert calls == [("img", "2026.11", "cpu")] and report.failed and "ValueError" in logs["trl-sft"]
    monkeypatch.delitem(sys.modules, "builder.smoke.training")
    monkeypatch.setattr(module.importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name)))
    assert module.training_runner() is None


def test_flash_attn_built_with_cxx17_holds_torch_at_the_newest_series_its_headers_allow(index, stack, monkeypatch):
    """torch >= 2.12's headers need C++20 and flash-attn 2.8.3.post2 compiles with -std=c++17 (builder/profile/
    versions.py): the newest torch (2.15.0) is refused by the loader, and torch steps down to the newest release
    of the next known series (2.11.0), not back to the release's own 2.10.0. Only the rule step runs here; the
    cuda target's lock would need CUDA's wheels on the loopback index."""
    import builder.lock.proposal as proposing

    index.add("torch", "2.15.0", "2026-10-28T00:00:00Z")
    index.add("flash-attn", "2.8.3.post2", BEFORE)
    compiled = ("    compiled:\n      - package: flash-attn==2.8.3.post2\n        why: attention kernels\n"
                "        targets: [cuda]\n        no_build_isolation: true\n        memory_per_job_gib: 9\n"
                "        env:\n          cuda:\n            FLASH_ATTN_CUDA_ARCHS: \"80;90\"\n")
    text = stack.read_text().replace("    targets:\n", "    targets:\n" + CUDA_TARGET)
    stack.write_text(text.replace("    packages:\n", compiled + "    packages:\n", 1))
    monkeypatch.setattr(proposing, "resolve_candidate", lambda proposal, release, base_text, scratch, *rest:
                        proposing.load_candidate(proposal, release, base_text, scratch, False, rest[2]))
    monkeypatch.setattr(proposing, "lock_candidate", lambda *args: None)
    proposal = _propose(stack)
    assert proposal.ok, proposal.failure
    torch = proposal.decisions["torch"]
    assert (torch.current, torch.chosen, torch.newest, torch.step) == ("2.10.0", "2.11.0", "2.15.0", "rule")
    assert torch.why == ("the profile's rules refuse it: flash-attn 2.8.3.post2 compiles with -std=c++17, and torch "
                         "2.15.0's headers need C++20 (#error C++20 or later compatible compiler is required to use "
                         "ATen) (keep torch below 2.12 until a flash-attn release compiles with C++20)")
    assert proposal.cuda == ("12.8", "13.0")  # 2.11.0 is PyPI's CUDA 13.0 build: the cuda target still moves
    assert proposal.targets == {"cuda": ("debian:bookworm-slim", "3.11")}
    assert 'torch: "2.11.0"' in proposal.text
    proposal.discard()


def test_a_flash_attn_release_whose_cxx_standard_is_unknown_is_not_assumed_to_build_on_torch_2_12(stack, cli):
    compiled = ("    compiled:\n      - package: flash-attn==2.9.0\n        why: attention kernels\n"
                "        targets: [cuda]\n        no_build_isolation: true\n        memory_per_job_gib: 9\n"
                "        env:\n          cuda:\n            FLASH_ATTN_CUDA_ARCHS: \"80;90\"\n")
    text = stack.read_text().replace("    targets:\n", "    targets:\n" + CUDA_TARGET.replace(
        "nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04", "debian:bookworm-slim").replace('"3.12"', '"3.11"'))
    text = text.replace('    torch: "2.10.0"\n    cuda: "12.8"\n', '    torch: "2.15.0"\n    cuda: "13.2"\n')
    stack.write_text(text.replace("    packages:\n", compiled + "    packages:\n", 1))
    code, out, err = cli("show", str(stack))
    assert code == 3, err  # a profile problem
    assert ("compiled[0].package: torch 2.15.0's headers need C++20, and which C++ standard flash-attn 2.9.0 "
            "compiles with is not known here") in err


def test_a_held_entry_of_the_base_release_is_carried_while_its_pin_stays(index, stack):
    """pip stays at 25.3 (the index has nothing newer for the image's Python), so the base release's reason for
    holding it still stands and the new block keeps the entry; app moves to 1.1, so its entry is dropped."""
    from builder.lock.proposal import held_entries

    held = ("    held:\n      - package: pip\n        at: \"25.3\"\n        newest: \"26.0\"\n"
            "        why: pip 26 needs a newer Python than this image's\n        evidence: [the resolver's words]\n"
            "      - package: app\n        at: \"1.0\"\n        newest: \"1.1\"\n        why: app 1.1 was not yet tried\n")
    stack.write_text(stack.read_text().replace("    fixes: []\n", held + "    fixes: []\n", 1))
    proposal = _propose(stack)
    assert proposal.ok, proposal.failure
    entries = {e["package"]: e for e in held_entries(proposal)}
    assert set(entries) == {"pip", "lib", "torch"}  # app moved: its old reason is gone
    assert (entries["pip"]["at"], entries["pip"]["newest"], entries["pip"]["evidence"]) == (
        "25.3", "26.0", ["the resolver's words"])
    from builder.lock.report import report_markdown
    assert "pip 26 needs a newer Python than this image's (held in 2026.11; the reason still stands)" in \
        report_markdown([proposal])
    write_proposal(proposal)
    release = load_stack(str(stack)).release("2026.12")
    assert [(h.package, h.at, h.newest) for h in release.held] == [
        ("lib", "1.5", "2.0"), ("pip", "25.3", "26.0"), ("torch", "2.11.0", "2.12.0")]
