"""Smoke checks inside real cpu images: every check passes, and each is shown able to fail."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from xml.etree import ElementTree

import pytest

import docker
from testcontainers.core.container import DockerContainer

from builder.smoke.checks import CHECKS
from builder.plan.build_plan import plan_build
from builder.profile.load import load_stack
from builder.smoke.run import SMOKE_LIFETIME_S, run_smoke

from .conftest import TEST_LABEL, github_reachable
from .test_build_engine import GIT_ONLY, RELEASES


# The non-GPU checks that cannot run on a cpu image, and the reason each must give. Any other skip fails.
EXPECTED_SKIPS = {
    ("flash-attn-fsdp", "2023.06", "fsdp-save"): "torch 2.0.1+cu117's FSDP needs CUDA",
    ("deepspeed-zero3-offload", "2023.06", "deepspeed-zero3-offload"): "has no usable CPU accelerator",
    **{(s, r, "flash-attn-import"): "flash-attn is not in this image" for s, r in RELEASES if s == "flash-attn-fsdp"},
    **{(s, r, "bitsandbytes-cuda"): "the cpu target" for s, r in RELEASES if s in ("alpaca-lora", "qlora")},
}


def _manifest_checks(stack: str, release: str) -> list[str]:
    return [c["name"] for c in plan_build(load_stack(stack), release, "cpu").manifest()["checks"]]


@pytest.mark.parametrize(("stack", "release"), RELEASES, ids=[f"{s}@{r}" for s, r in RELEASES])
def test_every_check_passes_in_every_cpu_image(stack, release, stack_images, engine, docker_client):
    if (stack, release) in GIT_ONLY and not github_reachable():
        pytest.skip(f"{stack}@{release} cannot be built here (GitHub pins; see test_build_engine)")
    image = stack_images(stack, release).ref.immutable
    before = _smoke_containers(docker_client)
    report = run_smoke(engine, image)
    results = {r.check: r for r in report.results}
    assert list(results) == _manifest_checks(stack, release)
    assert report.ok, [r for r in report.results if r.status == "fail"]
    for name, result in results.items():
        if CHECKS[name].gpu:
            # no GPU here: a GPU check says so and never passes
            assert result.status == "skip", result
            assert "no GPU" in result.detail or "not in this image" in result.detail, result
        elif (stack, release, name) in EXPECTED_SKIPS:
            assert result.status == "skip" and EXPECTED_SKIPS[stack, release, name] in result.detail, result
        elif name == "shm":
            # Docker's default /dev/shm (64 MB) is what a plain container gets: the check warns, never passes
            assert result.status == "warn", result
        else:
            assert result.status == "pass", result
    # the smoke container (labelled io.stackbuild.smoke) is gone: none is there that was not before
    assert _smoke_containers(docker_client) <= before


def _smoke_containers(client) -> set[str]:
    return {c.id for c in client.containers.list(all=True, filters={"label": "io.stackbuild.smoke"})}


def test_smoke_containers_of_killed_runs_are_removed_and_a_new_one_stops_by_itself(stack_images, engine,
                                                                                  docker_client):
    """A run killed where no `finally` runs (SIGKILL, a host shut down) leaves its container: a stopped
    one goes at the next run; a running one stops by itself after SMOKE_LIFETIME_S. Kept ones stay."""
    image = stack_images("qlora", "2026.11").ref.immutable

    def container(label: str, command: str):
        # TEST_LABEL: the session's sweep removes what a failing assertion leaves
        return docker_client.containers.run(image, command, detach=True, network_mode="none",
                                            labels={"io.stackbuild.smoke": label, TEST_LABEL: "1"})

    running_before = {c.id for c in docker_client.containers.list(filters={"label": "io.stackbuild.smoke"})}
    killed, kept, other_run = container("1", "true"), container("kept", "true"), container("1", "sleep 600")
    for stopped in (killed, kept):
        stopped.wait(timeout=30)
    commands = []
    report = run_smoke(engine, image, only=["python-version"], on_result=lambda result: commands.extend(
        c.attrs["Config"]["Cmd"] for c in docker_client.containers.list(filters={"label": "io.stackbuild.smoke=1"})
        if c.id not in running_before | {other_run.id}))
    assert report.ok and killed.name in report.swept
    after = _smoke_containers(docker_client)
    assert killed.id not in after and {kept.id, other_run.id} <= after
    # while it ran, this run's container waited a bounded time, not for ever
    assert commands == [["sleep", str(SMOKE_LIFETIME_S)]]
    for leftover in (kept, other_run):
        leftover.remove(force=True)


def test_a_terminated_test_command_removes_its_container(stack_images, docker_client):
    """SIGTERM (a cancelled CI job, `timeout`) unwinds like Ctrl-C: exit 143, and no container left."""
    stack_images("qlora", "2026.11")
    before = _smoke_containers(docker_client)
    proc = subprocess.Popen([sys.executable, "-m", "builder", "test", "qlora", "-t", "cpu", "--only", "torch-compile"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _smoke_containers(docker_client) - before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _smoke_containers(docker_client) - before, "the smoke container never started"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, (stdout, stderr)
    assert stderr.strip().endswith("error: terminated") and "Traceback" not in stderr, stderr
    assert _smoke_containers(docker_client) <= before


def test_the_cli_runs_the_checks_with_json_and_junit(stack_images, tmp_path):
    stack_images("qlora", "2026.11")
    junit = tmp_path / "report.xml"
    run = subprocess.run([sys.executable, "-m", "builder", "test", "qlora", "-t", "cpu", "--json", "--junit", str(junit)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] and [r["check"] for r in report["results"]] == _manifest_checks("qlora", "2026.11")
    suite = ElementTree.fromstring(junit.read_text())
    assert suite.get("failures") == "0" and len(suite.findall("testcase")) == len(report["results"])
    assert int(suite.get("skipped")) == sum(r["status"] == "skip" for r in report["results"]) > 0


def test_a_pulled_image_proves_itself_without_stackbuild(stack_images):
    """The image alone - a plain container, no stackbuild - carries its manifest, runner and checks."""
    built = stack_images("alpaca-lora", "2026.11")
    plan = plan_build(load_stack("alpaca-lora"), "2026.11", "cpu")
    container = DockerContainer(built.ref.immutable).with_command("sleep infinity").with_kwargs(
        network_mode="none", labels={TEST_LABEL: "1"})
    with container:
        code, out = container.exec(["cat", "/opt/stackbuild/manifest.json"])
        assert code == 0 and json.loads(out) == plan.manifest()
        code, out = container.exec(["python", "/opt/stackbuild/smoke/run.py", "--only", "pins", "lora-save"])
        results = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
        assert code == 0 and [(r["check"], r["status"]) for r in results] == [("pins", "pass"), ("lora-save", "pass")]
    # the context manager stopped and removed it
    assert not docker.from_env().containers.list(all=True, filters={"id": container.get_wrapped_container().id})


TORCH_SITE = {"3.9": "/opt/venv/lib/python3.9/site-packages", "3.11": "/opt/venv/lib/python3.11/site-packages"}
FSDP_UTILS = f"{TORCH_SITE['3.9']}/torch/distributed/fsdp/_state_dict_utils.py"

# Each case breaks what one check guards, in an image derived from a built one (offline unless it
# needs an index), and names the message the check must then give: (stack, release, check, RUN lines,
# needs the network, message).
BREAKS = [
    ("alpaca-lora", "2023.04", "pins", ["pip uninstall -y fire"], False, "fire is not installed"),
    ("alpaca-lora", "2023.04", "pip-check", ["pip uninstall -y tqdm"], False, "pip check: "),
    # the lock: a package removed, another installed past it
    ("qlora", "2023.07", "lock", ["pip uninstall -y mpmath"], False, "mpmath==1.3.0 is locked but not installed"),
    ("qlora", "2026.11", "lock", ["pip install --no-deps cowsay==6.1"], True, "cowsay==6.1 is installed but not in the lock"),
    ("alpaca-lora", "2023.04", "torch-compile",
     ["rm -f /usr/bin/gcc* /usr/bin/cc /usr/bin/c++ /usr/bin/g++* /usr/bin/x86_64-linux-gnu-g*"], False,
     "torch.compile failed"),
    # torch 2.10: inductor probes AVX2 alone (the check narrows its vector-ISA probe); no compiler still fails
    ("qlora", "2026.11", "torch-compile",
     ["rm -f /usr/bin/gcc* /usr/bin/cc /usr/bin/c++ /usr/bin/g++* /usr/bin/x86_64-linux-gnu-g*"], False,
     "torch.compile failed"),
    ("flash-attn-fsdp", "2023.06", "patches",
     [f"sed -i 's/state_dict\\[fqn\\].cpu().clone().detach()/state_dict[fqn].clone().detach()/' {FSDP_UTILS}"], False,
     "has 0 patched and 1 unpatched occurrence(s), expected 1 and 0"),
    ("flash-attn-fsdp", "2026.11", "functools-cache",
     [f"printf 'import functools; del functools.cache\\n' > {TORCH_SITE['3.11']}/break-cache.pth"], False,
     "from functools import cache fails on Python 3.11"),
    ("flash-attn-fsdp", "2026.11", "fsdp-save",
     [f"rm {TORCH_SITE['3.11']}/torch/distributed/fsdp/_state_dict_utils.py"], False,
     "FSDP training or saving failed on cpu"),
    # DeepSpeed: the seed's `Unable to pre-compile async_io` (no libaio), ops that would JIT at run time
    ("deepspeed-zero3-offload", "2023.06", "deepspeed-ops", ["apt-get purge -y libaio-dev libaio1"], False,
     "libaio.so.1: cannot open shared object file"),
    ("deepspeed-zero3-offload", "2026.11", "deepspeed-cpu-adam",
     [f"rm {TORCH_SITE['3.11']}/deepspeed/ops/adam/cpu_adam_op*.so"], False, "build DeepSpeed with DS_BUILD_CPU_ADAM=1"),
    ("deepspeed-zero3-offload", "2026.11", "deepspeed-zero3-offload",
     [f"rm {TORCH_SITE['3.11']}/deepspeed/ops/comm/deepspeed_shm_comm_op*.so"], False, "DS_BUILD_SHM_COMM=1"),
    ("deepspeed-zero3-offload", "2026.11", "ninja", ["pip uninstall -y ninja"], False, "pip install ninja==1.13.0"),
    ("deepspeed-zero3-offload", "2023.06", "deepspeed-config", ["pip install pydantic==2.5.3"], True,
     "deepspeed 0.9.3 needs pydantic<2"),
    # LoRA stacks: the seed's "fix" peft==0.3.0 saves a 443-byte adapter under alpaca-lora's override
    ("alpaca-lora", "2023.04", "lora-save", ["pip install --no-deps peft==0.3.0"], True,
     "the empty-adapter bug (peft-empty-adapter)"),
    ("alpaca-lora", "2023.04", "tokenizer-special-tokens", ["pip uninstall -y sentencepiece"], False,
     "install sentencepiece"),
    ("alpaca-lora", "2023.04", "numpy-torch", ["pip install --no-deps numpy==2.0.2"], True, "pin numpy<2"),
    ("alpaca-lora", "2023.04", "datasets-load-json", ["pip install --no-deps fsspec==2023.10.0"], True,
     "(datasets-fsspec-drift)"),
    ("qlora", "2023.07", "transformers-4bit", ["pip install --no-deps transformers==4.29.2"], True,
     "(qlora-transformers-too-old)"),
]


@pytest.mark.parametrize(("stack", "release", "check", "lines", "network", "message"), BREAKS,
                         ids=[f"{b[2]}-{b[0]}@{b[1]}" for b in BREAKS])
def test_each_check_fails_when_what_it_guards_is_broken(stack, release, check, lines, network, message,
                                                        stack_images, engine, derived_image):
    image = stack_images(stack, release).ref.immutable
    # the intact image passes this check (proven above); the broken one fails it, naming the cause
    report = run_smoke(engine, derived_image(image, lines, network), only=[check])
    [result] = report.results
    assert result.check == check and result.status == "fail", result
    assert message in result.detail, result.detail
    assert not report.ok and report.exit_code == 1
