"""Smoke checks inside real cpu images: every check passes, and each is shown able to fail."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
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
FSDP_UTILS_311 = f"{TORCH_SITE['3.11']}/torch/distributed/fsdp/_state_dict_utils.py"
TF_BNB_39 = f"{TORCH_SITE['3.9']}/transformers/utils/bitsandbytes.py"
CUDA_FIXTURES = Path(__file__).parents[1] / "unit" / "fixtures" / "cuda"
FAKE_GPU = Path(__file__).parent / "fixtures" / "fakegpu"


def _write_fixture(name: str, pattern: str) -> str:
    """A RUN line that writes a CUDA fixture (tests/unit/fixtures/cuda) over each file matching ``pattern``."""
    data = base64.b64encode((CUDA_FIXTURES / name).read_bytes()).decode()
    return f"for f in {pattern}; do echo {data} | base64 -d > \"$f\"; done"


# Each case breaks what one check guards, in an image derived from a built one (offline unless it
# needs an index), and names the message the check must then give: (stack, release, check, RUN lines,
# needs the network, message).
# An sshd that, like the real one, daemonizes before it binds, but binds 3 s later (a loaded host).
SLOW_SSHD = ("mv /usr/sbin/sshd /usr/sbin/sshd.real && printf '%s\\n' '#!/bin/sh' "
             "'case \" $* \" in *\" -t \"*|*\" -D \"*) exec /usr/sbin/sshd.real \"$@\";; esac' "
             "'(sleep 3; exec /usr/sbin/sshd.real \"$@\") >/dev/null 2>&1 &' > /usr/sbin/sshd "
             "&& chmod 0755 /usr/sbin/sshd")

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
    # where the saved tensors land: the line the era's FSDP patch fixed (.cpu() before .clone()) moves them off the
    # CPU instead (to the meta device, the only other one a GPU-less host has)
    ("flash-attn-fsdp", "2026.11", "fsdp-save",
     [f"sed -i 's/state_dict\\[fqn\\] = state_dict\\[fqn\\].detach().clone()$/&.to(\"meta\")/' {FSDP_UTILS_311} && "
      f"grep -q 'detach().clone().to(\"meta\")' {FSDP_UTILS_311}"], False,
     "the full state dict was gathered on meta, not the CPU"),
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
    # without a GPU, 4.31 stops at "No GPU found"; the CPU then proves the layer swap, here one that drops the
    # config's NF4 for FP4 (as 4.28/4.29 drop the 4-bit fields): before, any error mentioning a GPU passed
    ("qlora", "2023.07", "transformers-4bit",
     [f"sed -i 's/quant_type=quantization_config.bnb_4bit_quant_type,/quant_type=\"fp4\",/' {TF_BNB_39} && "
      f"grep -q 'quant_type=\"fp4\"' {TF_BNB_39}"], False,
     "transformers' 4-bit layer swap did not make NF4 double-quantised Linear4bit layers"),
    # the image's Python is another one: 2023.04's 3.9 where 2026.11 needs 3.11
    ("alpaca-lora", "2026.11", "python-version",
     ["COPY --from={image:alpaca-lora@2023.04} /usr/bin/python3.9 /usr/bin/python3.9",
      "COPY --from={image:alpaca-lora@2023.04} /usr/lib/python3.9 /usr/lib/python3.9",
      "ln -sf /usr/bin/python3.9 /opt/venv/bin/python"], False, "Python 3.9 in the image, the release needs 3.11"),
    # a compiled op's library misses what it needs (ldd), and one that holds device code on the cpu target
    ("deepspeed-zero3-offload", "2023.06", "cuda-binaries", ["apt-get purge -y libaio-dev libaio1"], False,
     "needs libaio.so.1"),
    ("deepspeed-zero3-offload", "2026.11", "cuda-binaries",
     [_write_fixture("image_ext_sm80.so", f"{TORCH_SITE['3.11']}/deepspeed/ops/adam/cpu_adam_op*.so")], False,
     "holds device code (sm_80) but the cpu target compiles for no GPU"),
    # multi-node: host keys baked into a layer (two nodes of the image would share them)
    ("flash-attn-fsdp", "2026.11", "multinode", ["ssh-keygen -A"], False, "stackbuild-sshd makes them at start"),
    # stackbuild-sshd without its wait, and an sshd that binds late after daemonizing: a launcher started
    # right after it is refused
    ("flash-attn-fsdp", "2026.11", "multinode",
     [SLOW_SSHD, "sed -i '/^until /,/^done$/d' /usr/local/bin/stackbuild-sshd"], False, "returned before sshd listened"),
]


@pytest.mark.parametrize(("stack", "release", "check", "lines", "network", "message"), BREAKS,
                         ids=[f"{b[2]}-{b[0]}@{b[1]}" for b in BREAKS])
def test_each_check_fails_when_what_it_guards_is_broken(stack, release, check, lines, network, message,
                                                        stack_images, engine, derived_image):
    image = stack_images(stack, release).ref.immutable
    lines = [re.sub(r"\{image:([^@}]+)@([^}]+)\}", lambda m: stack_images(m[1], m[2]).ref.immutable, line)
             for line in lines]
    # the intact image passes this check (proven above); the broken one fails it, naming the cause
    report = run_smoke(engine, derived_image(image, lines, network), only=[check])
    [result] = report.results
    assert result.check == check and result.status == "fail", result
    assert message in result.detail, result.detail
    assert not report.ok and report.exit_code == 1


def test_stackbuild_sshd_waits_for_an_sshd_that_binds_late(stack_images, engine, derived_image):
    """The break above without its sed: stackbuild-sshd waits for the late sshd, and the check passes."""
    image = derived_image(stack_images("flash-attn-fsdp", "2026.11").ref.immutable, [SLOW_SSHD])
    [result] = run_smoke(engine, image, only=["multinode"]).results
    assert result.status == "pass", result


# /dev/shm is the container's, not the image's: each case runs the image's runner in a container made that way.
SHM_CASES = [
    ({"ipc_mode": "none"}, "fail", "/dev/shm is missing"),  # no /dev/shm mounted at all
    ({"tmpfs": {"/dev/shm": "ro,size=2g"}}, "fail", "cannot hold a shared memory segment"),  # read-only
    ({"shm_size": "32m"}, "warn", "/dev/shm is 32 MB"),  # too small: the image is fine, the container is not
    ({"shm_size": "2g"}, "pass", "a shared memory segment is written and read back"),
]


def _result_of(client, image: str, command: list[str], **options) -> dict:
    """The last JSON line a container of ``image`` printed running ``command`` (it exits 1 when a check fails)."""
    container = client.containers.run(image, command, detach=True, network_mode="none", labels={TEST_LABEL: "1"},
                                      **options)
    try:
        container.wait(timeout=600)
        out = container.logs(stdout=True, stderr=False).decode()
    finally:
        container.remove(force=True)
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


@pytest.mark.parametrize(("options", "status", "message"), SHM_CASES, ids=["ipc-none", "read-only", "32m", "2g"])
def test_shm_fails_without_a_usable_dev_shm_and_warns_when_it_is_small(options, status, message, stack_images,
                                                                         docker_client):
    image = stack_images("alpaca-lora", "2026.11").ref.immutable
    result = _result_of(docker_client, image, ["python", "/opt/stackbuild/smoke/run.py", "--only", "shm"], **options)
    assert result["status"] == status and message in result["detail"], result


# The GPU branches, run where no GPU is: each check file of a cpu image runs with its release's cuda-target manifest
# and tests/integration/fixtures/fakegpu on PYTHONPATH (a stub GPU over the image's real torch; a stub flash-attn).
# Each case: (stack, release, check, stub GPU settings, root setup command, extra environment, status, message);
# the pass cases show the stub reaches the GPU branch and that it is the break that fails it.
UNDEFINED_SYMBOL = (
    "mkdir -p /tmp/broken && printf 'extern void _ZN3c104cuda20c10_cuda_check_implementationEiPKcS2_ib(void);\\n"
    "void PyInit_flash_attn_2_cuda(void) { _ZN3c104cuda20c10_cuda_check_implementationEiPKcS2_ib(); }\\n' "
    "> /tmp/broken/ext.c && gcc -shared -fPIC -o /tmp/broken/flash_attn_2_cuda$(python -c "
    "'import sysconfig; print(sysconfig.get_config_var(\"EXT_SUFFIX\"))') /tmp/broken/ext.c")
DS_OPS = f"{TORCH_SITE['3.11']}/deepspeed/ops/adam/cpu_adam_op*.so"
GPU_CASES = [
    ("alpaca-lora", "2026.11", "gpu-matmul", {"count": 2}, "", {}, "pass", "matmul matches the CPU on 2 GPU(s)"),
    ("alpaca-lora", "2026.11", "gpu-matmul", {"count": 2, "corrupt": 0.1}, "", {}, "fail",
     "GPU 0 (Stub GPU): result differs from the CPU by"),
    ("flash-attn-fsdp", "2026.11", "gpu-arch", {"capability": [9, 0], "name": "Stub H100"}, "", {}, "pass",
     "kernels for every GPU: GPU 0 (Stub H100, sm_90)"),
    # a GTX 1080 (sm_61): torch 2.10's own arch list (sm_70 and up), flash-attn's list and its sm80 floor
    ("flash-attn-fsdp", "2026.11", "gpu-arch", {"capability": [6, 1], "name": "Stub GTX 1080"}, "", {}, "fail",
     "torch 2.10.0+cu128 has no kernels for it"),
    # one GPU: one FSDP process shards nothing and leaves its state dict on cuda:0 (an H100 run failed so);
    # the save is proven in two CPU processes instead
    ("flash-attn-fsdp", "2026.11", "fsdp-save", {"count": 1}, "", {}, "pass",
     "FSDP on cpu (2 processes) trained a step"),
    ("flash-attn-fsdp", "2026.11", "flash-attn-import", {}, "", {}, "pass", "flash_attn_2_cuda import"),
    # an extension built against another torch: a real .so whose import fails with an undefined symbol
    ("flash-attn-fsdp", "2026.11", "flash-attn-import", {}, UNDEFINED_SYMBOL, {"PYTHONPATH": "/tmp/broken"}, "fail",
     "undefined symbol: _ZN3c104cuda20c10_cuda_check_implementation"),
    ("flash-attn-fsdp", "2026.11", "flash-attn-fwd-bwd", {}, "", {}, "pass", "forward+backward, head_dim 128"),
    ("flash-attn-fsdp", "2026.11", "flash-attn-fwd-bwd", {"flash": "ignore-causal"}, "", {}, "fail",
     "out differs from reference attention"),
    # bitsandbytes finds no library for the CUDA it is told (the field notes' CPU fallback)
    ("qlora", "2026.11", "bitsandbytes-cuda", {}, "", {"BNB_CUDA_VERSION": "999"}, "fail",
     "bitsandbytes loaded no native library (Configured CUDA binary not found"),
    # cuda-binaries' cuda rule in the image: DeepSpeed's op replaced by one for the 2026.11 arch list, then sm_80 only
    ("deepspeed-zero3-offload", "2026.11", "cuda-binaries", {}, _write_fixture(
        "image_ext_sm80_sm86_sm90_sm100_sm120.so", DS_OPS), {}, "pass",
     "1 compiled extension(s) hold device code for exactly their arch list"),
    ("deepspeed-zero3-offload", "2026.11", "cuda-binaries", {}, _write_fixture("image_ext_sm80.so", DS_OPS), {},
     "fail", "holds sm_80: no cubin for sm_86 sm_90 sm_100 sm_120"),
]


@pytest.mark.parametrize(("stack", "release", "check", "gpu", "setup", "env", "status", "message"), GPU_CASES,
                         ids=[f"{c[2]}-{c[6]}-{c[0]}@{c[1]}" for c in GPU_CASES])
def test_gpu_branches_fail_on_a_stub_gpu_when_what_they_guard_is_broken(stack, release, check, gpu, setup, env, status,
                                                                        message, stack_images, docker_client):
    image = stack_images(stack, release).ref.immutable
    manifest = plan_build(load_stack(stack), release, "cuda").manifest()
    entry = next(c for c in manifest["checks"] if c["name"] == check)
    argument = json.dumps({"check": entry, "manifest": manifest})
    command = f"{setup + ' && ' if setup else ''}python /opt/stackbuild/smoke/checks/{entry['file']} \"$0\""
    environment = {"STACKBUILD_FAKE_GPU": json.dumps(gpu),
                   "PYTHONPATH": ":".join(filter(None, [env.get("PYTHONPATH"), "/opt/stackbuild-test/fakegpu"])),
                   **{k: v for k, v in env.items() if k != "PYTHONPATH"}}
    result = _result_of(docker_client, image, ["bash", "-c", command, argument], environment=environment,
                        volumes={str(FAKE_GPU): {"bind": "/opt/stackbuild-test/fakegpu", "mode": "ro"}})
    assert result["status"] == status and message in result["detail"], result
