"""The CLI through CliRunner: outputs, exit codes, exact error messages, no half-written files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from builder.cli.catalog import list_stacks
from builder.profile.raw import RawStack


def test_list_json_has_every_stack_release_and_target(cli):
    code, out, err = cli("list", "--json")
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    assert set(rows) == {"alpaca-lora", "deepspeed-zero3-offload", "flash-attn-fsdp", "qlora"}
    for row in rows.values():
        assert sum(r["default"] for r in row["releases"]) == 1
        assert any(r["era"] for r in row["releases"])
        assert all(set(r["targets"]) == {"cuda", "cpu"} for r in row["releases"])


def test_list_table(cli):
    code, out, _ = cli("list")
    assert code == 0
    assert "deepspeed-zero3-offload" in out and "2026.11, 2026.12*" in out
    # the era releases under one "(era)", then the current ones, so four releases still fit 80 columns
    assert "2023.05, 2023.07 (era); 2026.11" in out


def test_show_prints_pins_flags_patches_and_fixes(cli):
    code, out, err = cli("show", "flash-attn-fsdp@2023.06")
    assert code == 0, err
    assert "flash-attn-fsdp@2023.06 (era)" in out
    assert "flash-attn==1.0.9 --no-build-isolation" in out
    assert "patch fsdp-save-cpu-clone (torch/distributed/fsdp/_state_dict_utils.py)" in out
    assert "option --with xformers (cuda)" in out
    assert "fsdp-save-oom" in out and "[patch]" in out


def test_show_says_which_steps_build_extensions_side_by_side(cli):
    code, out, err = cli("show", "deepspeed-zero3-offload@2026.11")
    assert code == 0, err
    assert "    MAX_JOBS: build host memory / 4 GiB\n" in out
    assert "    extensions side by side (build_ext -j), each in its own build folder, sharing those jobs\n" in out
    code, out, err = cli("show", "deepspeed-zero3-offload@2023.06")
    assert code == 0 and "side by side" not in out


def test_show_alpaca_lora_gives_the_reason_for_its_peft_pin(cli):
    code, out, _ = cli("show", "alpaca-lora@2023.04")
    assert code == 0
    assert "peft==0.2.0" in out
    assert "not the 0.3.0 the seed notes suggest" in out
    assert "443-byte adapter" in out


def test_show_json_is_complete(cli):
    code, out, _ = cli("show", "deepspeed-zero3-offload", "--json")
    assert code == 0
    info = json.loads(out)
    era = next(r for r in info["releases"] if r["era"])
    step = era["compiled"][0]
    assert step["package"] == "deepspeed==0.9.3"
    assert step["parallel_extensions"] is False
    current = next(r for r in info["releases"] if r["name"] == "2026.11")
    assert current["compiled"][0]["parallel_extensions"] is True
    assert step["env"]["cuda"]["DS_BUILD_OPS"] == "1"
    assert "libaio-dev" in era["apt"]
    assert any(n.startswith("DeepSpeed compiles its CPU ops with -march=native") for n in info["notes"])


def test_render_to_stdout_defaults_to_cuda_and_default_release(cli):
    code, out, _ = cli("render", "qlora")
    assert code == 0
    assert out.startswith("# qlora@2026.12, target cuda\n")
    assert "FROM debian:bookworm-slim" in out and "NVIDIA_VISIBLE_DEVICES" in out  # CUDA from torch's wheels


def test_render_output_file_and_context(cli, tmp_path):
    target = tmp_path / "Dockerfile"
    code, out, err = cli("render", "flash-attn-fsdp@2023.06", "-t", "cpu", "-o", str(target))
    assert code == 0 and out == "", err
    assert target.read_text().startswith("# flash-attn-fsdp@2023.06, target cpu")
    assert [p.name for p in tmp_path.iterdir()] == ["Dockerfile"]
    ctx = tmp_path / "ctx"
    code, _, err = cli("render", "flash-attn-fsdp@2023.06", "--context", str(ctx))
    assert code == 0, err
    written = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*") if p.is_file())
    assert [w for w in written if not w.startswith("smoke/")] == [
        "Dockerfile", "manifest.json", "patches/apply_patch.py", "patches/fsdp-save-cpu-clone.json", "site.sh"]
    assert "smoke/run.py" in written


def test_render_refuses_a_non_empty_context_and_leaves_it_alone(cli, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = cli("render", "qlora", "--context", str(tmp_path))
    assert code == 5
    assert err == f"error: --context {tmp_path} must be a new or empty folder\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_render_into_missing_folder_fails_cleanly(cli, tmp_path):
    code, _, err = cli("render", "qlora", "-o", str(tmp_path / "no" / "Dockerfile"))
    assert code == 5
    assert err == f"error: cannot write {tmp_path / 'no' / 'Dockerfile'}: folder {tmp_path / 'no'} does not exist\n"


def test_render_keeps_the_old_file_when_rendering_fails(cli, tmp_path):
    target = tmp_path / "Dockerfile"
    target.write_text("old")
    code, _, _ = cli("render", "qlora", "-t", "rocm", "-o", str(target))
    assert code == 4
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["Dockerfile"]


def test_unknown_stack_release_target_option(cli):
    assert cli("show", "qlor") == (4, "", "error: unknown stack 'qlor'; did you mean 'qlora'? stacks: alpaca-lora, "
                                     "deepspeed-zero3-offload, flash-attn-fsdp, qlora\n")
    assert cli("render", "qlora@2022.01") == (4, "", "error: stack 'qlora' has no release '2022.01'; releases: "
                                              + ", ".join(__import__("builder.profile.load", fromlist=["x"])
                                                          .load_stack("qlora").releases)
                                              + " (default 2026.12)\n")
    assert cli("render", "qlora", "--target", "rocm") == (4, "", "error: qlora@2026.12 has no target 'rocm'; "
                                                          "targets: cuda, cpu\n")
    assert cli("render", "qlora", "--with", "xformers") == (4, "", "error: qlora@2026.12 has no option "
                                                            "'xformers'; options: lomo\n")
    assert cli("render", "qlora@2023.07", "--with", "lomo") == (4, "", "error: qlora@2023.07 has no option "
                                                                "'lomo'; options: none\n")
    assert cli("render", "flash-attn-fsdp@2026.11", "-t", "cpu", "--with", "xformers") == (
        4, "", "error: option 'xformers' of flash-attn-fsdp@2026.11 is for targets cuda, not cpu\n")
    assert cli("show", "qlora@") == (4, "", "error: 'qlora@' is not STACK or STACK@RELEASE\n")


def test_missing_profile_file(cli, tmp_path):
    code, _, err = cli("show", str(tmp_path / "nope.yaml"))
    assert code == 4
    assert err == f"error: profile file not found: {tmp_path / 'nope.yaml'}\n"


def test_usage_error_exit_code(cli):
    code, _, err = cli("render")
    assert code == 2
    assert "Missing argument" in err


def test_schema_is_the_profile_json_schema(cli):
    code, out, _ = cli("schema")
    assert code == 0
    schema = json.loads(out)
    assert schema == RawStack.model_json_schema()
    assert "releases" in schema["properties"] and "RawRelease" in schema["$defs"]


def test_debug_shows_a_traceback_only_when_asked(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\n")
    code, _, err = cli("show", str(bad))
    assert code == 3 and "Traceback" not in err
    code, _, err = cli("--debug", "show", str(bad))
    assert code == 3 and "Traceback" in err


def test_version(cli):
    code, out, _ = cli("--version")
    assert code == 0 and out.startswith("stackbuild ")


def _run(args, **env):
    from typer.testing import CliRunner

    from builder.cli.commands import app

    result = CliRunner().invoke(app, args, env=env)
    return result.exit_code, result.stdout


def test_list_fits_80_columns_and_a_pipe_with_each_title_whole_on_its_own_line():
    rows = list_stacks()
    for env in ({"COLUMNS": "80"}, {"COLUMNS": ""}):  # an 80-column terminal; a pipe (CliRunner is not a tty)
        code, out = _run(["list"], **env)
        lines = out.splitlines()
        assert code == 0 and max(len(line) for line in lines) <= 80, out
        assert lines[0].split() == ["STACK", "RELEASES", "(*", "=", "default)", "TARGETS"]
        for row in rows:
            assert f"    {row['title']}" in lines, f"{row['title']!r} is not whole on its own line:\n{out}"
            assert lines[lines.index(f"    {row['title']}") - 1].startswith(row["name"] + " ")


def test_list_in_a_wide_terminal_keeps_the_title_column():
    code, out = _run(["list"], COLUMNS="200")
    assert code == 0 and out.splitlines()[0].split()[-1] == "TITLE"
    for row in list_stacks():
        assert any(line.startswith(row["name"] + " ") and line.endswith(row["title"]) for line in out.splitlines())


def test_show_prints_lock_paths_usable_from_where_it_runs(tmp_path, monkeypatch):
    from builder.safety.paths import stacks_dir

    lock = stacks_dir().resolve() / "locks" / "qlora@2023.07-cpu.txt"
    monkeypatch.chdir(tmp_path)  # outside the data folder: the absolute path
    code, out = _run(["show", "qlora@2023.07"])
    assert code == 0 and f"lock {lock}" in out
    monkeypatch.chdir(stacks_dir())  # inside it: relative to here, a path that opens
    code, out = _run(["show", "qlora@2023.07"])
    assert code == 0 and "lock locks/qlora@2023.07-cpu.txt" in out and Path("locks/qlora@2023.07-cpu.txt").is_file()


def test_sigterm_unwinds_like_ctrl_c_with_its_own_exit_code():
    """A cancelled CI job or `timeout` sends SIGTERM: the command unwinds (its `finally` blocks run,
    so nothing it made is left), says so in one line, and exits 143, never with a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "builder", "doctor", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until the handler is installed (SIGTERM's bit in the caught-signals mask), then signal
    deadline = time.monotonic() + 30
    while not _catches_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert (proc.returncode, stdout, stderr) == (143, "", "error: terminated\n")


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def test_a_declined_option_says_why_and_what_instead(cli):
    code, out, err = cli("render", "alpaca-lora", "--with", "mezo")
    assert (code, out) == (4, "")
    assert err.startswith("error: alpaca-lora@2026.12 does not ship option 'mezo' (MeZO zeroth-order fine-tuning ")
    assert "no maintained package implements it" in err and "instead: --with lomo" in err
    code, out, _ = cli("show", "qlora@2026.11")
    assert code == 0
    assert "option mezo not shipped: MeZO zeroth-order fine-tuning" in out and "    instead: --with lomo" in out
    # 2026.12 moved to CUDA 13, for which PyPI has no xformers: the option 2026.11 ships is declined there
    code, out, err = cli("render", "flash-attn-fsdp@2026.12", "-t", "cuda", "--with", "xformers")
    assert (code, out) == (4, "") and "links libcudart.so.12" in err and "flash-attn-fsdp@2026.11 --with xformers" in err
    assert cli("render", "flash-attn-fsdp@2026.11", "-t", "cuda", "--with", "xformers")[0] == 0


def test_show_prints_an_options_fixes_advisories_and_checks(cli):
    code, out, _ = cli("show", "alpaca-lora@2026.11")
    assert code == 0
    option = out[out.index("option --with lomo"):out.index("option mezo not shipped")]
    assert "adds: lomo-optim==0.1.1 (in the release's last layer" in option
    assert "lomo-optim-missing           [pin]" in option
    for advisory in ("lomo-grad-accum", "lomo-grad-clip", "lomo-distributed", "adalomo-cuda-only"):
        assert f"not preventable: {advisory} - " in option
    assert "smoke checks: lomo-trainer, adalomo-trainer" in option
    code, out, _ = cli("show", "alpaca-lora@2026.11", "--json")
    [release] = json.loads(out)["releases"]
    [lomo] = release["options"]
    assert lomo["last_packages"] == ["lomo-optim==0.1.1"] and lomo["checks"] == ["lomo-trainer", "adalomo-trainer"]
