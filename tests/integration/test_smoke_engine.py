"""Smoke checks inside real cpu images: every check passes, and each is shown able to fail."""

from __future__ import annotations

import json
import subprocess
import sys
from xml.etree import ElementTree

import pytest

import docker
from testcontainers.core.container import DockerContainer

from builder.checks import CHECKS
from builder.plan import plan_build
from builder.profile import load_stack
from builder.smoke import run_smoke

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
    # the smoke container (labelled io.stackbuild.smoke) is gone
    assert docker_client.containers.list(all=True, filters={"label": "io.stackbuild.smoke"}) == []


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
