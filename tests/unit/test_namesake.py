"""Namesake projects: every stack names the project it is named after, every release the commit it
runs, and every script x target either runs or says why not, what it fails with and what to use.

The runs themselves are integration tests (tests/integration/test_namesake_engine.py); these check
the profiles, `show`, `show --json`, `schema` and the link from a marked failure to doctor.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builder.doctor.diagnose import diagnose
from builder.profile.knowledge import load_knowledge_base
from builder.profile.load import available_stacks, load_stack

VENDORED = Path(__file__).parents[1] / "integration" / "fixtures" / "namesake"
LOGS = Path(__file__).parent / "fixtures" / "logs"
SPEC = re.compile(r"\b([a-z0-9-]+)@([0-9][0-9A-Za-z._-]*[0-9A-Za-z])")
RELEASES = [(s, r) for s in available_stacks() for r in load_stack(s).releases]


@pytest.mark.parametrize(("stack", "release"), RELEASES, ids=[f"{s}@{r}" for s, r in RELEASES])
def test_every_release_names_its_namesake_commit_and_the_commit_is_vendored(stack, release):
    namesake = load_stack(stack).releases[release].namesake
    assert namesake is not None, f"{stack}@{release} does not name its namesake project"
    origins = [p.read_text(encoding="utf-8") for p in VENDORED.glob("*/ORIGIN")]
    vendored = [o for o in origins if f"repository: {namesake.repository}\n" in o
                and re.search(rf"^commit:\s+{namesake.commit}\b", o, re.M)]
    assert len(vendored) == 1, f"{namesake.repository}@{namesake.commit} is not vendored once under {VENDORED}"
    for script in namesake.scripts:
        assert f"  {script}\n" in vendored[0], f"{script} is not among the vendored files"


@pytest.mark.parametrize(("stack", "release"), RELEASES, ids=[f"{s}@{r}" for s, r in RELEASES])
def test_every_unable_entry_says_why_and_names_something_that_exists(stack, release):
    loaded = load_stack(stack)
    for entry in loaded.releases[release].namesake.unable:
        assert entry.why and entry.instead
        for name, rel in SPEC.findall(entry.instead + " " + entry.why):
            if name in available_stacks():
                assert rel in load_stack(name).releases, f"{name}@{rel} named in {stack}@{release} does not exist"
        # the instead names a release or target that runs the script where this one cannot
        named = [(n, r) for n, r in SPEC.findall(entry.instead) if n == stack]
        for name, rel in named:
            other = load_stack(name).releases[rel].namesake
            for script in entry.scripts:
                assert any(other.unable_for(script, t) is None for t in load_stack(name).releases[rel].targets), \
                    f"{stack}@{release} points {script} to {name}@{rel}, which cannot run it either"


UNABLE_WITH_ISSUE = [(s, r, e) for s, r in RELEASES for e in load_stack(s).releases[r].namesake.unable
                     if e.issue is not None]


@pytest.mark.parametrize(("stack", "release", "entry"), UNABLE_WITH_ISSUE,
                         ids=[f"{s}@{r}:{e.scripts[0]}" for s, r, e in UNABLE_WITH_ISSUE])
def test_doctor_recognises_the_marked_failure_and_names_a_release_that_runs_it(stack, release, entry):
    # a real log of that failure (tests/unit/fixtures/logs/<issue>--N.log) carries the marked line
    logs = [p.read_text(encoding="utf-8") for p in sorted(LOGS.glob(f"{entry.issue}--*.log"))]
    real = [log for log in logs if entry.fails_with in log]
    assert real, f"no fixture log of {entry.issue} contains {entry.fails_with!r}"
    diagnoses = diagnose(real[0], stack=stack, release=release)
    assert diagnoses and diagnoses[0].issue.id == entry.issue, [d.issue.id for d in diagnoses]
    named = {f"{n}@{r}" for n, r in SPEC.findall(entry.instead)}
    assert named and all(spec in diagnoses[0].fix for spec in named), (diagnoses[0].fix, named)
    kb = load_knowledge_base()
    assert stack in kb[entry.issue].stacks or "any" in kb[entry.issue].stacks


def test_show_prints_where_the_namesake_runs_and_why_not(cli):
    code, out, err = cli("show", "alpaca-lora")
    assert code == 0, err
    assert "namesake: tloen/alpaca-lora at 8bb8579e403d (run unchanged)" in out
    era, current = out.split("\nalpaca-lora@2026.11 ")  # 2026.11 and 2026.12 (default) follow
    assert "finetune.py: runs on cuda" in era
    assert "cpu: cannot run - finetune.py loads the base model with load_in_8bit=True" in era
    assert "(doctor: bnb-quantized-needs-gpu)" in era
    assert "finetune.py: does not run on this release" in current
    assert "cpu: cannot run - finetune.py imports prepare_model_for_int8_training" in current
    assert ("fails with: ImportError: cannot import name 'prepare_model_for_int8_training' from 'peft' "
            "(doctor: peft-int8-removed)") in current
    assert "instead: alpaca-lora@2023.04 runs the unchanged finetune.py" in current


def test_show_json_carries_the_namesake(cli):
    code, out, err = cli("show", "alpaca-lora@2026.11", "--json")
    assert code == 0, err
    namesake = json.loads(out)["releases"][0]["namesake"]
    assert namesake["repository"] == "tloen/alpaca-lora"
    assert namesake["commit"] == "8bb8579e403dc78e37fe81ffbb253c413007323f"
    [script] = namesake["scripts"]
    assert script["path"] == "finetune.py"
    assert set(script["targets"]) == {"cuda", "cpu"}
    cpu = script["targets"]["cpu"]
    assert cpu["runs"] is False and cpu["issue"] == "peft-int8-removed"
    assert cpu["instead"].startswith("alpaca-lora@2023.04")


def test_schema_documents_the_namesake_fields(cli):
    code, out, _ = cli("schema")
    assert code == 0
    schema = json.loads(out)
    assert "namesake" in schema["properties"]
    assert "namesake" in schema["$defs"]["RawRelease"]["properties"]
    for model in ("RawNamesake", "RawNamesakeRun", "RawNamesakeUnable"):
        for name, field in schema["$defs"][model]["properties"].items():
            assert field.get("description"), f"{model}.{name} has no description"


def test_a_release_of_a_namesake_stack_must_name_its_commit(cli, tmp_path, monkeypatch):
    good = (Path(__file__).parent / "fixtures" / "good.yaml").read_text()
    text = re.sub(r"    namesake:\n(?:      .*\n|        .*\n|          .*\n)+", "", good)
    assert text != good
    (tmp_path / "good.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("show", "./good.yaml")
    assert code == 3
    assert ("releases.2023.06.namesake: release does not say which commit of example/trainer it runs (add "
            "namesake: {commit: <40-hex commit>} (and 'unable' entries where it cannot run))") in err
