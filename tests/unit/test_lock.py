"""Locks without the network: reading and writing them, what a stale one looks like, how a locked
image is rendered, `lock --check` and `diff`. (Making a lock with uv is an integration test.)"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from builder.render.guard import parse_dockerfile
from builder.errors import LockError
from builder.lock.format import LockedPackage, lock_problems, parse_lock, read_lock
from builder.plan.build_plan import lock_inputs, lock_path
from builder.plan.build_plan import plan_build
from builder.profile.load import available_stacks, load_stack
from builder.render.dockerfile import installs_with_uv, lock_layers, render_context

ROOT = Path(__file__).resolve().parents[2]

# Targets no lock is committed for, and why: locking needs the index their packages come from.
UNLOCKED = {
    ("alpaca-lora", "2023.04", "cuda"): "torch 2.0.1+cu118 comes from download.pytorch.org",
    ("deepspeed-zero3-offload", "2023.06", "cuda"): "torch 2.0.1+cu118 comes from download.pytorch.org",
    ("flash-attn-fsdp", "2023.06", "cuda"): "torch 2.0.1+cu118 comes from download.pytorch.org",
    ("qlora", "2023.05", "cuda"): "git pins (github.com) and torch 2.0.1+cu118 (download.pytorch.org)",
    ("qlora", "2023.05", "cpu"): "git pins of transformers, peft and accelerate are read from github.com",
    ("qlora", "2023.07", "cuda"): "torch 2.0.1+cu118 comes from download.pytorch.org",
}
TARGETS = [(s, r, t) for s in available_stacks() for r, rel in load_stack(s).releases.items() for t in rel.targets]


@pytest.mark.parametrize(("stack", "release", "target"), TARGETS, ids=[f"{s}@{r}-{t}" for s, r, t in TARGETS])
def test_every_lockable_target_has_a_lock_that_fits_its_profile(stack, release, target):
    plan = plan_build(load_stack(stack), release, target)
    if (stack, release, target) in UNLOCKED:
        assert plan.lock is None and not lock_path(plan).exists()
        return
    lock = plan.lock
    assert lock is not None, f"no {lock_path(plan)}: run `stackbuild lock {stack}@{release} --target {target}`"
    assert lock_problems(lock, lock_inputs(plan)) == []
    versions = lock.versions()
    for name, version in plan.pins.items():  # every pin is locked at its version, torch's +cuXXX included
        assert versions[name] == version, name
    assert all(p.hashes and all(h.startswith("sha256:") for h in p.hashes) for p in lock.packages())
    assert [key for key, _ in lock.groups][:2] == ["bootstrap", "torch"]
    assert lock.inputs.exclude_newer == f"{plan.release.date}T23:59:59Z"


def test_releases_on_the_same_torch_and_python_share_the_torch_layer():
    def torch_file(stack, release):
        return dict(render_context(plan_build(load_stack(stack), release, "cpu")).files)["lock/2-torch.txt"]
    assert torch_file("alpaca-lora", "2023.04") == torch_file("qlora", "2023.07") == torch_file(
        "flash-attn-fsdp", "2023.06") == torch_file("deepspeed-zero3-offload", "2023.06")
    assert torch_file("alpaca-lora", "2026.11") == torch_file("qlora", "2026.11")
    assert torch_file("alpaca-lora", "2023.04") != torch_file("alpaca-lora", "2026.11")


SAMPLE = """\
# format: stackbuild-lock 1
# stack: demo@2026.11 (cpu)
# python: 3.11
# platform: x86_64-manylinux_2_36
# exclude-newer: 2026-11-28T23:59:59Z
# input bootstrap: pip==25.3
# input packages: six==1.16.0
# input packages: tool @ git+https://github.com/o/tool.git@0123456789abcdef0123456789abcdef01234567

# [bootstrap]
pip==25.3 \\
    --hash=sha256:{a}
# [packages]
six==1.16.0 \\
    --hash=sha256:{b} \\
    --hash=sha256:{c}
tool @ git+https://github.com/o/tool.git@0123456789abcdef0123456789abcdef01234567
""".format(a="a" * 64, b="b" * 64, c="c" * 64)


def test_a_lock_reads_back_what_it_writes():
    lock = parse_lock(SAMPLE, "sample.txt")
    assert [key for key, _ in lock.groups] == ["bootstrap", "packages"]
    six = lock.group("packages")[0]
    assert six == LockedPackage("six", "1.16.0", "six==1.16.0", ("sha256:" + "b" * 64, "sha256:" + "c" * 64))
    [git] = lock.git_pins()
    assert git.name == "tool" and git.version is None and git.hashes == ()
    assert lock.versions()["tool"] == "git+https://github.com/o/tool.git@0123456789abcdef0123456789abcdef01234567"
    again = parse_lock(lock.text(), "again.txt")
    assert again == lock


def test_a_git_pin_gets_its_own_install_without_hashes():
    layers, files = lock_layers(parse_lock(SAMPLE, "sample.txt"))
    assert layers["packages"].files == ["lock/4-packages.txt", "lock/4-packages-git.txt"]
    assert files["lock/4-packages-git.txt"].decode().splitlines()[1].startswith("tool @ git+")
    assert "--hash" not in files["lock/4-packages-git.txt"].decode()
    assert "pip install --no-deps --require-hashes" in files["lock/4-packages.txt"].decode().splitlines()[0]


WITH_UV = SAMPLE.replace("# input bootstrap: pip==25.3\n", "# input bootstrap: pip==25.3\n# input bootstrap: uv==0.13.9\n") \
    .replace("# [packages]\n", "uv==0.13.9 \\\n    --hash=sha256:{}\n# [packages]\n".format("d" * 64))


def test_a_lock_with_uv_in_bootstrap_has_its_later_hashed_sections_installed_by_uv():
    assert not installs_with_uv(parse_lock(SAMPLE, "sample.txt")) and not installs_with_uv(None)
    lock = parse_lock(WITH_UV, "uv.txt")
    assert installs_with_uv(lock)
    _, files = lock_layers(lock)
    heads = {name: data.decode().splitlines()[0] for name, data in files.items()}
    assert heads["lock/1-bootstrap.txt"].endswith("installed by one layer with pip install --no-deps --require-hashes")
    assert heads["lock/4-packages.txt"].endswith("installed by one layer with uv pip install --no-deps --require-hashes")
    assert heads["lock/4-packages-git.txt"].endswith("installed by one layer with pip install --no-deps")


def _runs(dockerfile: str) -> list[str]:
    """The RUN instructions as Docker reads them, runs of spaces made one."""
    return [" ".join(i.text.split()) for i in parse_dockerfile(dockerfile)[1] if i.keyword == "RUN"]


@pytest.mark.parametrize(("stack", "sections"), [
    ("deepspeed-zero3-offload", {"2-torch", "3-deepspeed-deps", "4-packages"}),
    ("qlora", {"2-torch", "4-packages", "5-last"}),
])
def test_every_hashed_section_after_bootstrap_is_installed_by_uv_from_the_lock(stack, sections):
    plan = plan_build(load_stack(stack), "2026.11", "cpu")
    assert "uv" in {p.name for p in plan.lock.group("bootstrap")}  # pinned and hash-checked like the rest
    ctx = render_context(plan)
    runs = _runs(ctx.dockerfile)
    bootstrap = next(r for r in runs if "lock/1-bootstrap.txt" in r)
    assert "/opt/venv/bin/python -m pip install --no-deps --require-hashes -r /opt/stackbuild/lock/1-bootstrap.txt" \
        in bootstrap
    uv = ("uv pip install --python /opt/venv/bin/python --compile-bytecode --no-deps --require-hashes "
          "-r /opt/stackbuild/lock/")
    files = {name[len("lock/"):-len(".txt")] for name, _ in ctx.files if name.startswith("lock/")}
    assert files - {"1-bootstrap", "3-deepspeed"} == sections
    for section in sections:
        assert sum(f"{uv}{section}.txt" in r for r in runs) == 1, section
    assert sum("uv pip install" in r for r in runs) == len(sections)
    if "3-deepspeed-deps" in sections:  # the compiled package itself is built from its sdist by pip, as before
        run = next(r for r in runs if "-r /opt/stackbuild/lock/3-deepspeed.txt" in r)
        assert " pip install --no-build-isolation --no-deps --require-hashes -r /opt/stackbuild/lock/3-deepspeed.txt" \
            in run and "uv pip install --no-build-isolation" not in run


def test_a_lock_without_uv_is_installed_by_pip_as_before():
    plan = plan_build(load_stack("qlora"), "2026.11", "cpu")
    groups = tuple((key, tuple(p for p in packages if p.name != "uv")) for key, packages in plan.lock.groups)
    text = render_context(replace(plan, lock=replace(plan.lock, groups=groups))).dockerfile
    assert "uv pip" not in text and "UV_" not in text
    assert "&& pip install --no-deps --require-hashes -r /opt/stackbuild/lock/2-torch.txt \\\n" in text
    assert "&& pip install --no-deps --require-hashes -r /opt/stackbuild/lock/4-packages.txt \\\n" in text


@pytest.mark.parametrize(("text", "message"), [
    ("six==1.16.0\n", "not a stackbuild lock"),
    ("# format: stackbuild-lock 1\n# [all]\nsix==1.16.0\n", "the lock's header lacks stack, python, platform"),
    (SAMPLE.replace("# [bootstrap]\n", ""), "a package before the first [section]"),
    (SAMPLE.replace("--hash=sha256:" + "a" * 64, "--index-url=http://x"),
     "broken.txt:11: pip==25.3 --index-url=http://x in [bootstrap] is not what `stackbuild lock` writes: an index"),
])
def test_a_broken_lock_names_what_is_wrong(text, message):
    with pytest.raises(LockError, match=message.replace("[", r"\[")):
        parse_lock(text, "broken.txt")


_GIT = "tool @ git+https://github.com/o/tool.git@0123456789abcdef0123456789abcdef01234567"
_SIX = "six==1.16.0 \\\n    --hash=sha256:{b} \\\n    --hash=sha256:{c}\n".format(b="b" * 64, c="c" * 64)


@pytest.mark.parametrize(("entry", "why"), [
    ("six @ https://files.example/six-1.16.0-py3-none-any.whl", "a URL or file requirement"),
    ("https://files.example/six-1.16.0-py3-none-any.whl", "a URL or file requirement"),
    ("six @ file:///tmp/six-1.16.0-py3-none-any.whl", "a URL or file requirement"),
    ("./six-1.16.0-py3-none-any.whl", "a URL or file requirement"),
    ("-e git+https://github.com/o/evil.git#egg=evil", "an editable install"),
    ("--editable=git+https://github.com/o/evil.git#egg=evil", "an editable install"),
    ("six==1.16.0 -i https://evil.example/simple \\\n    --hash=sha256:" + "b" * 64, "an index or file option"),
    ("--extra-index-url https://evil.example/simple", "an index or file option"),
    ("-r other.txt", "an index or file option"),
    ("six==1.16.0 ; python_version >= '3' \\\n    --hash=sha256:" + "b" * 64, "an environment marker"),
    ("six==1.16.0;sys_platform=='linux' \\\n    --hash=sha256:" + "b" * 64, "an environment marker"),
    ("evil @ git+https://github.com/o/evil.git@0123456789abcdef0123456789abcdef01234567", "a git URL"),
    ("tool @ git+https://github.com/o/tool.git@ffffffffffffffffffffffffffffffffffffffff", "a git URL"),
    ("tool @ git+https://github.com/o/tool.git@main", "a git URL"),
    ("six[extra]==1.16.0 \\\n    --hash=sha256:" + "b" * 64, "extras"),
    ("six==1.16.0", "has no --hash"),
    ("six>=1.16.0 \\\n    --hash=sha256:" + "b" * 64, "not NAME==VERSION"),
    ("six==1.16.0 \\\n    --hash=md5:" + "b" * 32, "a hash that is not"),
    ("six==1.16.0 \\\n    --hash=sha256:" + "B" * 64, "a hash that is not"),
    ("six==1.16.0 \\\n    --no-binary=:all: \\\n    --hash=sha256:" + "b" * 64, "an option (--no-binary"),
    ("six==not.a.version! \\\n    --hash=sha256:" + "b" * 64, "'not.a.version!' is not a version"),
    (_GIT + " \\\n    --hash=sha256:" + "b" * 64, "a git pin cannot have a hash"),
])
def test_the_parser_accepts_only_what_the_resolver_writes(entry, why):
    text = SAMPLE.replace(_SIX, _SIX + entry + "\n")
    with pytest.raises(LockError, match=re.escape(why)) as caught:
        parse_lock(text, "forged.txt")
    assert "forged.txt:" in str(caught.value) and "never by editing it" in str(caught.value)


@pytest.mark.parametrize(("line", "why"), [
    ("# stack: other@2026.11 (cpu)", "a second '# stack:' line"),
    ("# pip-args: --index-url https://evil.example", "is not a line of a lock's header"),
    ("--index-url https://evil.example/simple", "a package before the first [section]"),
])
def test_the_parser_accepts_only_the_header_the_resolver_writes(line, why):
    text = SAMPLE.replace("# input bootstrap: pip==25.3\n", f"# input bootstrap: pip==25.3\n{line}\n")
    with pytest.raises(LockError, match=re.escape(why)):
        parse_lock(text, "forged.txt")


def test_a_comment_inside_a_section_is_refused_by_the_parser_too():
    with pytest.raises(LockError, match=r"forged.txt:17: a comment inside section \[packages\]"):
        parse_lock(SAMPLE.replace(_SIX, _SIX + "# pip install evil\n"), "forged.txt")


def test_a_git_pin_is_one_only_where_the_inputs_declare_it_at_that_commit():
    lock = parse_lock(SAMPLE, "sample.txt")
    assert [p.name for p in lock.git_pins()] == ["tool"]
    undeclared = SAMPLE.replace("# input packages: " + _GIT + "\n", "")
    with pytest.raises(LockError, match="forged.txt:16: tool @ git\\+https.* a git URL that is not exactly one"):
        parse_lock(undeclared, "forged.txt")


def test_a_hand_edited_lock_contradicting_its_inputs_is_caught():
    lock = parse_lock(SAMPLE.replace("six==1.16.0 \\", "six==1.15.0 \\"), "sample.txt")
    problems = lock_problems(lock, lock.inputs)
    assert "six==1.16.0 is an input but the lock installs 1.15.0" in problems


def _copy_stack(tmp_path: Path, name: str) -> Path:
    (tmp_path / "locks").mkdir()
    shutil.copy(ROOT / "stacks" / f"{name}.yaml", tmp_path / f"{name}.yaml")
    for lock in (ROOT / "stacks" / "locks").glob(f"{name}@*.txt"):
        shutil.copy(lock, tmp_path / "locks" / lock.name)
    return tmp_path / f"{name}.yaml"


def test_editing_a_pin_without_locking_again_fails_check_render_and_build(cli, tmp_path):
    profile = _copy_stack(tmp_path, "qlora")
    spec = f"{profile}@2023.07"
    assert cli("lock", spec, "-t", "cpu", "--check")[0] == 0
    profile.write_text(profile.read_text().replace("      - transformers==4.31.0\n", "      - transformers==4.31.1\n"))
    code, out, err = cli("lock", spec, "-t", "cpu", "--check")
    assert code == 13
    assert "stale     qlora@2023.07 (cpu): the profile changed since the lock was made:" in out
    assert "  -# input packages: transformers==4.31.0" in out and "  +# input packages: transformers==4.31.1" in out
    assert err.startswith("error: locks do not fit their profiles - 1 stale, edited, forged, missing or orphan: qlora@2023.07 (cpu)")
    code, _, err = cli("render", spec, "-t", "cpu")
    assert code == 13 and "does not fit qlora@2023.07 (cpu) any more" in err
    assert f"run `stackbuild lock qlora@2023.07 --target cpu`" in err


def test_check_reports_unlocked_targets_and_fails_on_them_only_when_strict(cli, tmp_path):
    profile = _copy_stack(tmp_path, "qlora")
    code, out, _ = cli("lock", f"{profile}@2023.07", "--check")
    assert code == 0 and "unlocked  qlora@2023.07 (cuda): no " in out and "ok        qlora@2023.07 (cpu)" in out
    code, _, err = cli("lock", f"{profile}@2023.07", "--check", "--strict")
    assert code == 13 and "1 unlocked: qlora@2023.07 (cuda)" in err


def test_an_orphan_lock_fails_the_whole_check(cli, tmp_path, monkeypatch):
    stacks = tmp_path / "stacks"
    shutil.copytree(ROOT / "stacks", stacks)
    shutil.copy(stacks / "locks" / "qlora@2023.07-cpu.txt", stacks / "locks" / "qlora@2022.01-cpu.txt")
    monkeypatch.setattr("builder.profile.load.stacks_dir", lambda: stacks)
    monkeypatch.setattr("builder.lock.resolution.available_stacks", lambda: sorted(
        p.stem for p in stacks.glob("*.yaml") if p.stem != "known-issues"))
    code, out, err = cli("lock", "--check")
    assert code == 13 and "orphan    " in out and "qlora@2022.01-cpu.txt: no stack, release and target" in out


def test_the_shipped_locks_pass_the_check_ci_runs(cli):
    code, out, err = cli("lock", "--check")
    assert code == 0, out + err
    # + flash-attn-fsdp@2026.11 cuda +xformers, and alpaca-lora and qlora (2026.11, 2026.12) cpu and cuda +lomo
    assert out.count("ok        ") == len(TARGETS) - len(UNLOCKED) + 1 + 8


def test_lock_usage_errors(cli):
    assert cli("lock")[0] == 2
    assert cli("lock", "qlora", "--all")[0] == 2
    assert cli("lock", "qlora", "--strict")[0] == 2


def test_diff_between_two_releases_and_two_lock_files(cli):
    code, out, _ = cli("diff", "qlora@2023.07", "qlora@2026.11", "-t", "cpu", "--json")
    assert code == 0
    rows = {r["package"]: (r["a"], r["b"]) for r in json.loads(out)}
    assert rows["transformers"] == ("4.31.0", "5.14.1") and rows["torch"] == ("2.0.1", "2.10.0")
    assert rows["nvidia-cublas-cu11"][1] is None and rows["nvidia-cublas-cu12"][0] is None
    locks = ROOT / "stacks" / "locks"
    code, out, _ = cli("diff", str(locks / "qlora@2026.11-cpu.txt"), str(locks / "alpaca-lora@2026.11-cpu.txt"))
    assert code == 0 and "fire" in out and out.rstrip().splitlines()[-1].endswith("only in A")
    code, out, _ = cli("diff", "qlora@2026.11", "qlora@2026.11", "-t", "cpu")
    assert code == 0 and out.startswith("no differences: 86 packages each")


def test_diff_refuses_what_has_no_package_list(cli, fake):
    code, _, err = cli("diff", "qlora@2023.05", "qlora@2023.07", "-t", "cpu")
    assert code == 13 and "qlora@2023.05 (cpu) has no lock: run `stackbuild lock qlora@2023.05 --target cpu`" in err
    code, _, err = cli("diff", "nope.txt", "qlora@2023.07")
    assert code == 4 and "lock file not found: nope.txt" in err
    fake.images["old:1"] = {"Id": "sha256:1", "Config": {"Labels": {"io.stackbuild.stack": "qlora"}}}
    code, _, err = cli("diff", "old:1", "qlora@2023.07", "-t", "cpu")
    assert code == 4 and "image old:1 carries no io.stackbuild.lock label" in err


def test_diff_of_two_images_reads_their_labels(cli, fake):
    for name, plan in (("a:1", plan_build(load_stack("qlora"), "2023.07", "cpu")),
                       ("b:1", plan_build(load_stack("qlora"), "2026.11", "cpu"))):
        fake.images[name] = {"Id": name, "Config": {"Labels": plan.labels()}}
    code, out, _ = cli("diff", "a:1", "b:1", "--json")
    rows = {r["package"]: (r["a"], r["b"]) for r in json.loads(out)}
    assert code == 0 and rows["peft"] == ("0.4.0", "0.21.2")


def test_a_locked_image_installs_only_from_its_lock():
    plan = plan_build(load_stack("deepspeed-zero3-offload"), "2026.11", "cpu")
    ctx = render_context(plan)
    files = dict(ctx.files)
    runs = [line for line in ctx.dockerfile.splitlines() if "pip install" in line]
    assert runs and all("--require-hashes" in line and "--no-deps" in line for line in runs)
    assert "pip install --no-build-isolation --no-deps --require-hashes -r /opt/stackbuild/lock/3-deepspeed.txt" in (
        ctx.dockerfile)
    assert files["lock/3-deepspeed.txt"].decode().splitlines()[1] == "deepspeed==0.18.9 \\"
    installed = set()
    for name, data in files.items():
        if name.startswith("lock/"):
            installed |= {line.split("==")[0] for line in data.decode().splitlines() if "==" in line}
    assert installed == set(plan.lock.versions())
    assert json.loads(plan.labels()["io.stackbuild.lock"]) == plan.lock.versions()
    assert plan.manifest()["locked"] is True


def test_read_lock_reports_an_unreadable_file(tmp_path):
    with pytest.raises(LockError, match="cannot read"):
        read_lock(tmp_path / "missing.txt")


def test_building_an_unlocked_target_warns_that_it_may_not_repeat(cli, fake):
    code, _, err = cli("build", "qlora@2023.07", "-t", "cuda", "-q")
    assert code == 0
    assert err.startswith("warning: qlora@2023.07 (cuda) has no lock: pip resolves its transitive dependencies")
    code, _, err = cli("build", "qlora@2023.07", "-t", "cpu", "-q")
    assert code == 0 and err == ""


def test_lock_changes_name_what_moved_per_section_and_every_layer_from_the_first_change_on():
    from builder.lock.format import lock_changes
    lock = parse_lock(SAMPLE, "sample.txt")
    assert not lock_changes(lock, lock).moved and lock_changes(lock, lock).sections == ()
    bumped = parse_lock(SAMPLE.replace("six==1.16.0 \\", "six==1.17.0 \\"), "bumped.txt")
    changes = lock_changes(lock, bumped)
    assert changes.sections == (("packages", (("six", "1.16.0", "1.17.0"),)),) and changes.rebuilt == ("packages",)
    early = parse_lock(SAMPLE.replace("--hash=sha256:" + "a" * 64, "--hash=sha256:" + "f" * 64), "early.txt")
    changes = lock_changes(lock, early)
    assert changes.sections == () and changes.rehashed == (("bootstrap", "pip"),)
    assert changes.rebuilt == ("bootstrap", "packages")  # an unchanged later section rebuilds on a changed earlier one
    dropped = parse_lock(SAMPLE.replace(_SIX, ""), "dropped.txt")
    assert lock_changes(lock, dropped).sections == (("packages", (("six", "1.16.0", None),)),)
    assert lock_changes(dropped, lock).sections == (("packages", (("six", None, "1.16.0"),)),)
