"""No profile value can add, remove or split a Dockerfile instruction (issue 13, item 1)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from builder.render import dockerfile as render
from builder.render.guard import PLACEHOLDER, check_dockerfile, parse_dockerfile
from builder.errors import RenderError
from builder.plan.build_plan import plan_build
from builder.profile.load import load_stack

GOOD = Path(__file__).parent / "fixtures" / "good.yaml"


def test_parser_joins_continuations_skips_comments_and_empty_continuation_lines():
    text = ("# syntax=docker/dockerfile:1\n# a comment\nFROM debian\n\nRUN a \\\n# inside\n\n  b \\  \r\n c\n"
            "  env A=1\n")
    directives, instructions = parse_dockerfile(text)
    assert directives == (("syntax", "docker/dockerfile:1"),)
    assert [(i.keyword, i.text, i.line) for i in instructions] == [
        ("FROM", "FROM debian", 3), ("RUN", "RUN a   b  c", 5), ("ENV", "env A=1", 10)]


def test_parser_splits_on_newline_only_as_docker_does():
    # \r, \x0b, \x85 and \u2028 end a line for str.splitlines(), not for Docker
    _, instructions = parse_dockerfile("RUN a\rRUN b\x85c\u2028d\n")
    assert len(instructions) == 1


def test_guard_accepts_the_skeleton_shape():
    check_dockerfile("FROM x:1\nRUN a \\\n b\n", f"FROM {PLACEHOLDER}\nRUN a \\\n {PLACEHOLDER}\n", "t")


@pytest.mark.parametrize("rendered", [
    "FROM x:1\nRUN a \\\n b\nRUN c\n",          # an extra instruction
    "FROM x:1\n",                                 # a missing one
    "FROM x:1\nRUN a \\\n b\n\\\nrun c\n",        # a continuation that starts a new instruction
    "FROM x:1\nCOPY a \\\n b\n",                 # another keyword
    "FROM x:1\nRUN b \\\n b\n",                  # other fixed text
    "FROM x:1\nRUN a \\\n <<EOF\n",              # a heredoc
    "# escape=`\nFROM x:1\nRUN a \\\n b\n",       # a parser directive
    "FROM x:1\nRUN a \\\n b\x1b\n",              # a control character
])
def test_guard_refuses_every_change_of_instructions(rendered):
    with pytest.raises(RenderError, match="refusing to write the Dockerfile"):
        check_dockerfile(rendered, f"FROM {PLACEHOLDER}\nRUN a \\\n {PLACEHOLDER}\n", "t")


def test_a_trailing_newline_is_refused_by_validation_everywhere(cli, tmp_path, monkeypatch):
    """Each field the issue found accepting "value\\n" (patterns ending in `$`) refuses it now."""
    good = GOOD.read_text()
    cases = {
        "apt": ("  - libaio-dev", '  - libaio-dev\n  - "rsync\\n"'),
        "env name": ('BNB_CUDA_VERSION: "118"', '"BNB\\n": "118"'),
        "env value": ('BNB_CUDA_VERSION: "118"', 'BNB_CUDA_VERSION: "118\\n"'),
        "file key": ("  config.json:", '  "config.json\\n":'),
        "torch": ('torch: "2.0.1"', 'torch: "2.0.1\\n"'),
        "release": ('"2023.06":', '"2023.06\\n":'),
    }
    monkeypatch.chdir(tmp_path)
    for name, (old, new) in cases.items():
        assert old in good, name
        (tmp_path / "good.yaml").write_text(good.replace(old, new, 1))
        code, out, err = cli("render", "./good.yaml", "-t", "cpu")
        assert code == 3, (name, err)
        assert out == "", name


def test_the_render_guard_catches_what_validation_would_miss(monkeypatch):
    """A plan that carries the issue's `rsync\\n` apt injection (as if validation missed it) fails to render."""
    stack = load_stack(str(GOOD))
    release = replace(stack.releases["2023.06"], apt=("libaio-dev", "rsync\n", "run", "sudo", "touch", "xx"))
    hostile = replace(stack, releases={"2023.06": release})
    plan = plan_build(hostile, target="cpu", with_lock=False)
    with pytest.raises(RenderError, match=r"refusing to render 'rsync\\n' into a Dockerfile"):
        render.render_dockerfile(plan)
    # and with that first check off, the instruction comparison still refuses it
    monkeypatch.setattr(render, "checked_value", lambda value: value)
    render._environment.cache_clear()
    try:
        with pytest.raises(RenderError, match="is not the plan's"):
            render.render_dockerfile(plan)
    finally:
        render._environment.cache_clear()


def test_a_profile_path_with_newlines_stays_one_comment_line():
    stack = load_stack(str(GOOD))
    hostile = replace(stack, source="dir\nFROM evil AS x\nRUN touch /pwned\n")
    text = render.render_dockerfile(plan_build(hostile, target="cpu", with_lock=False))
    assert "\nRUN touch /pwned" not in text
    assert "# Rendered by `stackbuild render` from dir\\x0aFROM evil AS x\\x0aRUN touch /pwned\\x0a:" in text
    keywords = [i.keyword for i in parse_dockerfile(text)[1]]
    assert keywords.count("FROM") == 1


def test_profile_errors_print_escape_sequences_from_keys_as_escapes(cli, tmp_path, monkeypatch):
    text = GOOD.read_text().replace("title: A good stack", 'title: A good stack\n"\\e]52;c;cm0gLXJmIH4=\\a\\e[2J": 1', 1)
    (tmp_path / "good.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("show", "./good.yaml")
    assert code == 3
    assert "\x1b" not in err and "\x07" not in err
    assert "\\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b[2J: unknown field" in err
