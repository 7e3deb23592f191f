"""`build` against a fake engine: naming, labels, tags, progress, errors and the failure log."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path


from builder.engine.classic import context_tar
from builder.errors import BuildError

from .conftest import BASE_DIGEST

def test_build_names_labels_and_tags(cli, fake, monkeypatch):
    monkeypatch.setenv("STACKBUILD_REGISTRY", "localhost:5000/sb")
    code, out, err = cli("build", "qlora@2023.07", "--target", "cpu", "--tag", "mine/qlora:dev",
                         "--build-arg", "HTTPS_PROXY=http://proxy:3128")
    assert code == 0, err
    call = fake.builds[0]
    ref = call["tag"]
    assert ref.startswith("localhost:5000/sb/qlora:2023.07-cpu-")
    assert call["labels"]["io.stackbuild.base"] == f"debian:bullseye-slim@{BASE_DIGEST}"
    assert ref.endswith(call["labels"]["io.stackbuild.content-hash"][:12])
    assert call["network_mode"] is None and call["buildargs"] == {"HTTPS_PROXY": "http://proxy:3128"}
    assert [t for _, t in fake.tags] == [ref, "localhost:5000/sb/qlora:2023.07-cpu", "mine/qlora:dev"]
    # pull-or-build: the registry was asked for exactly this content first
    assert fake.pulls == [ref] and f"{ref} is not in the registry: building it here" in out and err == ""
    assert "[1/" in out and "(cached)" in out
    assert out.rstrip().endswith("(all cached)")
    assert f"built localhost:5000/sb/qlora:2023.07-cpu = {ref} in " in out


def test_json_progress(cli, fake):
    code, out, _ = cli("build", "alpaca-lora", "-t", "cpu", "--json")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0] == {"event": "note", "text": "building with the classic engine"}
    assert events[1]["event"] == "step" and events[1]["step"] == 1
    assert events[-1]["event"] == "result" and events[-1]["image"] == "stackbuild/alpaca-lora:2026.12-cpu"


def test_quiet_prints_only_the_result(cli, fake):
    code, out, _ = cli("build", "alpaca-lora", "-t", "cpu", "-q")
    assert code == 0 and out.count("\n") == 1 and out.startswith("built ")


def test_site_settings_need_host_networking(cli, fake, monkeypatch):
    monkeypatch.setenv("STACKBUILD_PIP_INDEX_URL", "https://u:s3cr3tz@idx.example/simple")
    code, _, err = cli("build", "qlora", "-t", "cpu")
    assert code == 6
    assert err == ("error: site settings (PIP_INDEX_URL) reach a classic build from a loopback server, which needs "
                   "host networking, but build_network is 'default': set STACKBUILD_BUILD_NETWORK=host or pass "
                   "--network host (or build with --engine buildkit, which passes them as a build secret)\n")
    assert fake.builds == []
    code, _, err = cli("build", "qlora", "-t", "cpu", "--network", "host")
    assert code == 0, err
    assert fake.builds[0]["network_mode"] == "host"
    assert "s3cr3tz" not in fake.builds[0]["dockerfile"] and "idx.example" not in json.dumps(fake.builds[0]["labels"])


def test_failed_step_names_step_exit_code_last_lines_and_log(cli, fake, tmp_path):
    fake.fail_at = 9
    code, _, err = cli("build", "qlora@2023.07", "-t", "cpu")
    assert code == 8
    lines = err.splitlines()
    assert lines[0].startswith("error: step 9/")
    assert "failed (exit code 1): RUN . /opt/stackbuild/site.sh" in lines[0]
    assert "  ERROR: No matching distribution found for peft==99.0" in lines
    log = Path(lines[-1].removeprefix("full log: "))
    assert log.parent == tmp_path / "cache" / "stackbuild" / "logs"
    assert "No matching distribution found" in log.read_text()


def test_bad_build_arg_and_tag(cli, fake):
    assert cli("build", "qlora", "--build-arg", "no-equals")[0] == 6
    code, _, err = cli("build", "qlora", "--tag", "Bad Tag")
    assert code == 6 and err.startswith("error: --tag 'Bad Tag' is not an image reference (")


def test_no_engine_is_reported_with_what_was_tried(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nowhere.sock")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    code, _, err = cli("build", "qlora", "-t", "cpu")
    assert code == 7
    assert err.startswith(f"error: no Docker engine answered at unix://{tmp_path}/nowhere.sock (from DOCKER_HOST): ")
    assert "bash .ci/harness.sh" in err and "Traceback" not in err


def test_a_stopped_daemon_is_engine_unavailable(cli, monkeypatch, tmp_path):
    # A stopped dockerd leaves its socket file behind: connecting is refused.
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    code, _, err = cli("build", "alpaca-lora", "-t", "cpu")
    assert code == 7
    assert err.startswith(f"error: no Docker engine answered at unix://{path} (from DOCKER_HOST): ")


def test_context_tar_is_deterministic():
    files = (("a.txt", b"x"), ("site.sh", b"y"))
    assert context_tar("FROM x\n", files).getvalue() == context_tar("FROM x\n", files).getvalue()


def test_build_error_text():
    error = BuildError("The command returned a non-zero code: 2", step=3, total=9, instruction="RUN x",
                       exit_status=2).with_log(("a", "b"), "/tmp/l.log")
    assert str(error) == "step 3/9 failed (exit code 2): RUN x\nlast lines of its output:\n  a\n  b\nfull log: /tmp/l.log"


def test_buildkit_takes_site_settings_as_a_secret_on_any_network(cli, fake, monkeypatch):
    fake.kind = "buildkit"
    monkeypatch.setenv("STACKBUILD_PIP_INDEX_URL", "https://u:s3cr3tz@idx.example/simple")
    code, out, err = cli("build", "qlora", "-t", "cpu")
    assert code == 0, err
    call = fake.builds[0]
    assert call["network_mode"] is None and "building with the buildkit engine" in out
    assert call["site"] == {"PIP_INDEX_URL": "https://u:s3cr3tz@idx.example/simple"}  # BuildKit: a build secret
    network_steps = [line for line in call["dockerfile"].splitlines() if "site.sh && site_begin" in line]
    assert network_steps and all(line.startswith("RUN --mount=type=secret,id=stackbuild-site,required=false ")
                                 for line in network_steps)
    assert "s3cr3tz" not in call["dockerfile"] and "s3cr3tz" not in out + err


def test_registry_cache_names_and_needs(cli, fake, monkeypatch):
    code, _, err = cli("build", "qlora", "-t", "cpu", "--cache-to", "localhost:5000/c:x")
    assert code == 6 and "--cache-from/--cache-to need the BuildKit engine" in err and fake.builds == []
    fake.kind = "buildkit"
    code, _, err = cli("build", "qlora", "-t", "cpu", "--cache-from", "registry")
    assert code == 6 and "--cache-from registry needs a registry" in err
    code, _, err = cli("build", "qlora", "-t", "cpu", "--cache-to", "Bad Ref")
    assert code == 6 and "--cache-to 'Bad Ref' is not an image reference (" in err
    monkeypatch.setenv("STACKBUILD_REGISTRY", "localhost:5000/sb")
    code, _, err = cli("build", "qlora@2023.07", "-t", "cpu", "--cache-from", "registry", "--cache-to",
                       "registry", "--no-pull")
    assert code == 0, err
    call = fake.builds[0]
    assert call["cache_from"] == call["cache_to"] == "localhost:5000/sb/qlora:cache-2023.07-cpu"


def test_engine_and_builder_settings_are_checked(cli, fake):
    code, _, err = cli("build", "qlora", "-t", "cpu", "--engine", "podman")
    assert code == 6 and "engine 'podman' is not one of auto, buildkit, classic" in err
    code, _, err = cli("build", "qlora", "-t", "cpu", "--builder", "no way")
    assert code == 6 and "builder 'no way' is not a buildx builder name" in err
    assert fake.builds == []


def test_zstd_layers_need_buildkit(cli, fake):
    code, _, err = cli("build", "qlora", "-t", "cpu", "--compression", "zstd")
    assert code == 6 and "compression zstd needs the BuildKit engine on containerd's image store" in err
    code, _, err = cli("build", "qlora", "-t", "cpu", "--compression", "brotli")
    assert code == 6 and "compression 'brotli' is not one of gzip, zstd" in err
    fake.kind = "buildkit"
    code, _, err = cli("build", "qlora", "-t", "cpu", "--compression", "zstd")
    assert code == 0, err
    assert fake.builds[0]["compression"] == "zstd"
