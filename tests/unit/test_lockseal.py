"""Every edit a person could make to a lock by hand is caught (issue 13, item 3)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = "qlora@2026.11-cpu.txt"
HASH = "--hash=sha256:" + "ab" * 32


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "locks").mkdir()
    shutil.copy(ROOT / "stacks" / "qlora.yaml", tmp_path / "qlora.yaml")
    for lock in (ROOT / "stacks" / "locks").glob("qlora@*.txt"):
        shutil.copy(lock, tmp_path / "locks" / lock.name)
    return tmp_path / "qlora.yaml", tmp_path / "locks" / LOCK


def _first_package(text: str, section: str) -> str:
    body = text.split(f"# [{section}]\n", 1)[1]
    return re.match(r"[A-Za-z0-9_.-]+==\S+", body)[0]


EDITS = {
    "add a package with a valid hash": lambda t: t.replace("# [packages]\n", f"# [packages]\nevil==1.0 \\\n    {HASH}\n"),
    "remove a transitive package": lambda t: re.sub(r"\n(?P<p>[a-z0-9_.-]+==[^\n]+ \\\n(?:    --hash=[^\n]+(?: \\)?\n)+)",
                                                    "\n", t, count=1),
    "re-version a package": lambda t: t.replace(_first_package(t, "packages"), _first_package(t, "packages") + ".1"),
    "change a hash": lambda t: re.sub(r"--hash=sha256:[0-9a-f]{64}", HASH[2:].replace("--", "--"), t, count=1)
    if False else re.sub(r"(--hash=sha256:)[0-9a-f]{64}", r"\g<1>" + "cd" * 32, t, count=1),
    "a second [packages] header": lambda t: t.replace("\n# [packages]\n", "\n# [packages]\n", 1).replace(
        _first_package(t, "packages"), "# [packages]\n" + _first_package(t, "packages"), 1),
    "an unknown section": lambda t: t.replace("# [last]", "# [extra]"),
    "a comment in the body": lambda t: t.replace("# [last]\n", "# [last]\n# pinned by hand\n"),
    "a blank line in a section": lambda t: t.replace("# [torch]\n", "# [torch]\n\n\n", 1).replace(
        "# [torch]\n\n\n", "# [torch]\n", 0) if False else t.replace(" \\\n    --hash", " \\\n\n    --hash", 1),
    "trailing whitespace": lambda t: t.replace(" \\\n", "  \\\n", 1),
    "delete a seal line": lambda t: re.sub(r"# sha256 \[last\]: [0-9a-f]{64}\n", "", t),
    "edit a seal line": lambda t: re.sub(r"(# sha256 \[torch\]: )[0-9a-f]{64}", r"\g<1>" + "0" * 64, t),
    "remove every seal line": lambda t: re.sub(r"# sha256 [^\n]+\n", "", t),
    "edit the resolver": lambda t: t.replace("# resolver: uv", "# resolver: pip"),
    "swap two sections": lambda t: _swap(t),
    "drop a section": lambda t: t.split("\n# [last]\n")[0] + "\n",
}


def _swap(text: str) -> str:
    head, rest = text.split("\n# [packages]\n", 1)
    packages, last = rest.split("\n# [last]\n", 1)
    return head + "\n# [last]\n" + last.rstrip("\n") + "\n\n# [packages]\n" + packages + "\n"


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_every_hand_edit_fails_check_render_and_names_the_line(cli, tmp_path, edit):
    profile, lock = _copy(tmp_path)
    original = lock.read_text()
    edited = EDITS[edit](original)
    assert edited != original, "the edit did nothing"
    lock.write_text(edited)
    code, out, err = cli("lock", f"{profile}@2026.11", "-t", "cpu", "--check")
    assert code == 13, (out, err)
    assert "Traceback" not in out + err
    code, out, err = cli("render", f"{profile}@2026.11", "-t", "cpu")
    assert code == 13, err
    assert out == ""
    assert re.search(rf"{re.escape(LOCK)}(:\d+)?: ", err), err
    if edit != "remove every seal line":
        assert re.search(rf"{re.escape(LOCK)}:\d+: ", err), err


def test_the_committed_locks_pass_and_a_resealed_lock_is_the_same_file(cli, tmp_path):
    from builder.lock.format import read_lock
    profile, lock = _copy(tmp_path)
    assert cli("lock", f"{profile}@2026.11", "-t", "cpu", "--check")[0] == 0
    assert read_lock(lock).text() == lock.read_text()


@pytest.mark.parametrize("kind", ["missing", "folder", "fifo", "loop"])
def test_a_lockable_target_without_a_readable_lock_is_an_error_not_an_unlocked_build(cli, tmp_path, kind):
    profile, lock = _copy(tmp_path)
    lock.unlink()
    if kind == "folder":
        lock.mkdir()
    elif kind == "fifo":
        os.mkfifo(lock)
    elif kind == "loop":
        lock.symlink_to(lock)
    code, out, err = cli("render", f"{profile}@2026.11", "-t", "cpu")
    assert code == 13, err
    assert out == "" and LOCK in err
    code, out, err = cli("lock", f"{profile}@2026.11", "-t", "cpu", "--check")
    assert code == 13, (out, err)
    if kind == "missing":
        assert f"missing   qlora@2026.11 (cpu): no " in out


def test_targets_that_cannot_be_locked_here_stay_unlocked(cli, tmp_path):
    profile, _ = _copy(tmp_path)
    code, out, err = cli("render", f"{profile}@2023.05", "-t", "cpu")  # git pins: github.com
    assert code == 0, err
    code, out, err = cli("render", f"{profile}@2023.07", "-t", "cuda")  # torch from download.pytorch.org
    assert code == 0, err
