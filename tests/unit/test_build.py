"""`build` against a fake engine: naming, labels, tags, progress, errors and the failure log."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

import builder.build
from builder.engine import BuildEvent, BuildLog, Engine, context_tar
from builder.errors import BuildError
from builder.site import SiteServer

BASE_DIGEST = "sha256:" + "c" * 64


class FakeEngine:
    """Records calls; plays back a scripted build."""

    address = "unix:///fake.sock"

    def __init__(self, fail_at: int | None = None):
        self.fail_at = fail_at
        self.builds: list[dict] = []
        self.tags: list[tuple[str, str]] = []

    def base_identity(self, ref, pull, on_event=None):
        return f"{ref}@{BASE_DIGEST}"

    def build(self, dockerfile, files, tag, labels, network_mode, nocache, buildargs, log: BuildLog, on_event):
        self.builds.append(dict(dockerfile=dockerfile, files=dict(files), tag=tag, labels=labels,
                                network_mode=network_mode, nocache=nocache, buildargs=buildargs))
        steps = [line for line in dockerfile.splitlines() if line.startswith(("FROM", "RUN", "COPY", "ENV", "LABEL"))]
        for n, instruction in enumerate(steps, 1):
            Engine._line(f"Step {n}/{len(steps)} : {instruction}", log, on_event)
            if n == self.fail_at:
                Engine._line("ERROR: No matching distribution found for peft==99.0", log, on_event)
                raise Engine._step_error(
                    "The command '/bin/bash -o pipefail -c pip install' returned a non-zero code: 1", log)
            Engine._line(" ---> Using cache" if n > 1 else " ---> abc", log, on_event)
        on_event(BuildEvent("done", "sha256:" + "d" * 64))
        return "sha256:" + "d" * 64

    def tag(self, image, ref):
        self.tags.append((image, ref))


@pytest.fixture
def fake(monkeypatch, tmp_path):
    engine = FakeEngine()
    monkeypatch.setattr(builder.build.Engine, "connect", classmethod(lambda cls, timeout=600: engine))
    # a fake build reads nothing from the site server: any free port will do (a real build may hold 47391)
    monkeypatch.setattr(builder.build, "SiteServer", lambda values: SiteServer(values, port=0))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("REGISTRY", "BUILD_NETWORK", "CA_BUNDLE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "CONFIG"):
        monkeypatch.delenv(f"STACKBUILD_{name}", raising=False)
    return engine


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
    assert [t for _, t in fake.tags] == ["localhost:5000/sb/qlora:2023.07-cpu", "mine/qlora:dev"]
    assert "[1/" in out and "(cached)" in out
    assert out.rstrip().endswith("(all cached)")
    assert f"built localhost:5000/sb/qlora:2023.07-cpu = {ref} in " in out


def test_json_progress(cli, fake):
    code, out, _ = cli("build", "alpaca-lora", "-t", "cpu", "--json")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "step" and events[0]["step"] == 1
    assert events[-1]["event"] == "result" and events[-1]["image"] == "stackbuild/alpaca-lora:2026.11-cpu"


def test_quiet_prints_only_the_result(cli, fake):
    code, out, _ = cli("build", "alpaca-lora", "-t", "cpu", "-q")
    assert code == 0 and out.count("\n") == 1 and out.startswith("built ")


def test_site_settings_need_host_networking(cli, fake, monkeypatch):
    monkeypatch.setenv("STACKBUILD_PIP_INDEX_URL", "https://u:tok@idx.example/simple")
    code, _, err = cli("build", "qlora", "-t", "cpu")
    assert code == 6
    assert err == ("error: site settings (PIP_INDEX_URL) reach the build from a loopback server, which needs host "
                   "networking, but build_network is 'default': set STACKBUILD_BUILD_NETWORK=host or pass "
                   "--network host\n")
    assert fake.builds == []
    code, _, err = cli("build", "qlora", "-t", "cpu", "--network", "host")
    assert code == 0, err
    assert fake.builds[0]["network_mode"] == "host"
    assert "tok" not in fake.builds[0]["dockerfile"] and "idx.example" not in json.dumps(fake.builds[0]["labels"])


def test_failed_step_names_step_exit_code_last_lines_and_log(cli, fake, tmp_path):
    fake.fail_at = 8
    code, _, err = cli("build", "qlora@2023.07", "-t", "cpu")
    assert code == 8
    lines = err.splitlines()
    assert lines[0].startswith("error: step 8/")
    assert "failed (exit code 1): RUN . /opt/stackbuild/site.sh" in lines[0]
    assert "  ERROR: No matching distribution found for peft==99.0" in lines
    log = Path(lines[-1].removeprefix("full log: "))
    assert log.parent == tmp_path / "cache" / "stackbuild" / "logs"
    assert "No matching distribution found" in log.read_text()


def test_bad_build_arg_and_tag(cli, fake):
    assert cli("build", "qlora", "--build-arg", "no-equals")[0] == 6
    code, _, err = cli("build", "qlora", "--tag", "Bad Tag")
    assert code == 6 and err == "error: --tag 'Bad Tag' is not an image name\n"


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
