"""Bounded reads of regular files only, and safe output writes (issue 13, items 2 and 6)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.safety.files import InputRefused, read_bytes, write_output

BOMB = "\n".join(["a: &a [" + ",".join(['"lol"'] * 9) + "]"] +
                 [f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join(["*" + chr(96 + i)] * 9) + "]" for i in range(1, 10)])


@pytest.fixture
def specials(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    folder = tmp_path / "folder"
    folder.mkdir()
    return {"fifo": fifo, "loop": loop, "folder": folder, "device": Path("/dev/zero")}


def test_read_bytes_refuses_what_is_not_a_regular_file(specials):
    for name, path in specials.items():
        with pytest.raises(InputRefused) as info:
            read_bytes(path, 1024)
        assert str(info.value), name


def test_read_bytes_refuses_a_file_over_its_limit(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 2048)
    with pytest.raises(InputRefused, match="larger than 1 KiB"):
        read_bytes(tmp_path / "big", 1024)
    assert read_bytes(tmp_path / "big", 2048) == b"x" * 2048


@pytest.mark.parametrize("name,text,message", [
    ("bomb", BOMB, "expands to more than 100,000 values"),
    ("deep", "[" * 50000 + "]" * 50000, "nested more than 64 levels deep"),
    ("deep-block", "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)) + "  " * 80 + "x: 1\n",
     "nested more than 64 levels deep"),
    ("recursive", "a: &x [*x]\n", "recursive anchor"),
    ("big", "a: '" + "x" * (300 * 1024) + "'\n", "larger than 256 KiB"),
])
def test_hostile_yaml_profiles_are_refused_before_they_use_memory(cli, tmp_path, monkeypatch, name, text, message):
    (tmp_path / f"{name}.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("show", f"./{name}.yaml")
    assert code == 3, err
    assert message in err and "Traceback" not in err


def test_special_files_as_profiles_are_refused_with_exit_3(cli, specials):
    for name, path in specials.items():
        code, _, err = cli("show", str(path))
        assert code == 3, (name, err)
        assert err.startswith("error: ") and "cannot read file" in err


@pytest.mark.parametrize("text,message", [
    ("a = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ("registry = '" + "x" * (2 * 1024 * 1024) + "'\n", "larger than 1 MiB"),
])
def test_hostile_config_files_are_refused_with_exit_6(cli, tmp_path, text, message):
    config = tmp_path / "config.toml"
    config.write_text(text)
    code, _, err = cli("--config", str(config), "config", "show")
    assert code == 6, err
    assert message in err


def test_special_files_as_config_or_ca_bundle_are_refused_with_exit_6(cli, specials, monkeypatch):
    for name, path in specials.items():
        code, _, err = cli("--config", str(path), "config", "show")
        assert code == 6, (name, err)
        monkeypatch.setenv("STACKBUILD_CA_BUNDLE", str(path))
        code, _, err = cli("config", "show")
        assert code == 6, (name, err)
        assert "ca_bundle" in err
        monkeypatch.delenv("STACKBUILD_CA_BUNDLE")


def test_write_output_honours_the_umask_and_refuses_special_files(tmp_path, specials):
    old = os.umask(0o022)
    try:
        write_output(tmp_path / "out", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o644
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "out")
    for path in (*specials.values(), link, str(tmp_path / "new") + "/"):
        with pytest.raises(InputRefused):
            write_output(path, b"y")
    assert (tmp_path / "out").read_bytes() == b"x"
    assert stat.S_ISFIFO(specials["fifo"].lstat().st_mode) and link.is_symlink()
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "link", "loop", "out"]


def test_render_output_writes_only_regular_files(cli, tmp_path, specials):
    code, out, err = cli("render", "qlora", "-t", "cpu", "-o", "-")
    assert code == 0 and out.startswith("# qlora@") and not Path("-").exists()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    cases = [str(specials["fifo"]), str(specials["folder"]), str(link), str(tmp_path / "new") + "/",
             str(tmp_path / ("x" * 260)), str(tmp_path / "missing" / "Dockerfile")]
    for path in cases:
        code, out, err = cli("render", "qlora", "-t", "cpu", "-o", path)
        assert code == 5, (path, err)
        assert err.startswith("error: cannot write ") and len(err.strip().splitlines()) == 1, err
    assert stat.S_ISFIFO(specials["fifo"].lstat().st_mode) and link.is_symlink() and not (tmp_path / "target").exists()
    assert not (tmp_path / "new").exists()
    old = os.umask(0o027)
    try:
        code, _, err = cli("render", "qlora", "-t", "cpu", "-o", str(tmp_path / "Dockerfile"))
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE((tmp_path / "Dockerfile").stat().st_mode) == 0o640


def test_a_failed_render_leaves_no_context_behind(cli, tmp_path, specials):
    code, _, err = cli("render", "qlora", "-t", "cpu", "--context", str(tmp_path / "ctx"), "-o",
                       str(specials["fifo"]))
    assert code == 5, err
    assert not (tmp_path / "ctx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ctx")]


def test_the_junit_report_is_not_written_into_a_fifo(tmp_path, specials):
    from builder.errors import SmokeError
    from builder.smoke.run import SmokeReport, write_junit
    report = SmokeReport("img:1", [])
    with pytest.raises(SmokeError, match="FIFO"):
        write_junit(report, specials["fifo"])
    write_junit(report, tmp_path / "junit.xml")
    assert (tmp_path / "junit.xml").read_text().startswith("<?xml")


@pytest.mark.parametrize("special", ["fifo", "device"])
def test_a_special_docker_client_config_is_refused_not_read(tmp_path, monkeypatch, special):
    """docker-py reads $DOCKER_CONFIG/config.json when it starts: a FIFO blocked forever, /dev/zero filled memory."""
    from builder.engine.classic import DockerEngine
    from builder.errors import EngineUnavailable
    folder = tmp_path / "docker"
    folder.mkdir()
    if special == "fifo":
        os.mkfifo(folder / "config.json")
    else:
        (folder / "config.json").symlink_to("/dev/zero")
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(EngineUnavailable, match="cannot use the Docker client configuration .*not a regular file"):
        DockerEngine.connect(timeout=5)
