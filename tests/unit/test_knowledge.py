"""The knowledge base: the shipped file is valid and complete; a bad one is reported exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ProfileError
from builder.profile.knowledge import load_knowledge_base
from builder.profile.load import available_stacks, load_stack

SEED_ITEMS = {
    "ds-aio-precompile", "ds-sparse-attn-torch2", "ds-era-pin", "fa-build-no-torch", "fastchat-functools-cache",
    "fsdp-save-oom", "fa-fp32", "fa-ampere-only", "fa1-headdim-sm86", "bnb-cpu-lib", "qlora-transformers-too-old",
    "peft-empty-adapter", "qlora-throughput", "llama-decapoda-tokenizer", "host-oom-killed",
    "cuda-device-side-assert", "torch-compile-py311",
}


def test_shipped_knowledge_base_covers_every_seed_item():
    kb = load_knowledge_base()
    assert SEED_ITEMS <= set(kb)
    assert {i.id for i in kb.values() if i.seed} >= SEED_ITEMS - {"torch-compile-py311"}
    for issue in kb.values():
        assert set(issue.stacks) <= set(available_stacks()) | {"any"}, issue.id
        assert issue.cause and issue.fix and issue.prevention


def test_every_stack_fix_names_a_known_issue_for_that_stack():
    kb = load_knowledge_base()
    for name in available_stacks():
        for rel in load_stack(name).releases.values():
            for fix in rel.fixes:
                assert fix.issue is kb[fix.issue.id]
                assert name in fix.issue.stacks or "any" in fix.issue.stacks, (name, fix.issue.id)


def test_era_fixes_say_what_differs_on_that_release():
    kb = load_knowledge_base()
    keys = [(issue.id, key) for issue in kb.values() for key, _ in issue.fix_era]
    assert len(keys) >= 40
    for issue in kb.values():
        for key, text in issue.fix_era:
            assert text != issue.fix and len(text) >= 40, (issue.id, key)


GOOD_ENTRY = """issues:
  - id: one
    title: One
    kind: failure
    stacks: [qlora]
    symptom: "Boom"
    cause: c
    fix: f
    prevention: p
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD_ENTRY.replace("id: one", "id: One_1"),
         "kb.yaml:2: issues[0].id: 'One_1' is not a valid issue id (use lowercase words joined by '-')"),
        (GOOD_ENTRY.replace("kind: failure", "kind: bug"),
         "kb.yaml:4: issues[0].kind: 'bug' is not allowed (use 'failure' or 'advisory')"),
        (GOOD_ENTRY.replace('    symptom: "Boom"\n', ""),
         "kb.yaml:2: issues[0].symptom: a failure needs the line users see (add 'symptom')"),
        (GOOD_ENTRY + "    references: [nowhere]\n",
         "kb.yaml:10: issues[0].references[0]: 'nowhere' is not a reference (write it as owner/repo#number)"),
        (GOOD_ENTRY + GOOD_ENTRY.replace("issues:\n", ""),
         "kb.yaml:10: issues[1].id: duplicate id 'one' (give every issue a unique id)"),
        (GOOD_ENTRY.replace("    cause: c\n", "    cause: c\n    causes: d\n"),
         "kb.yaml:8: issues[0].causes: unknown field (did you mean 'cause'? allowed: cause, context, context_window, "
         "fix, fix_era, fixed_in, generic, id, kind, patterns, prevented_by, prevention, proven_by, references, seed, "
         "stacks, symptom, title)"),
    ],
)
def test_bad_knowledge_base(text, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = Path("kb.yaml")
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_knowledge_base(path.resolve())
    assert expected in [str(p) for p in info.value.problems]
