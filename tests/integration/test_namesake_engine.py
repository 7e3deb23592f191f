"""Every release runs its namesake project's own training scripts, unchanged, in its cpu image.

The scripts are vendored at the commit each release names (tests/integration/fixtures/namesake/,
each folder with its ORIGIN and LICENSE) and run offline (--network none) on a tiny random LLaMA,
its sentencepiece tokenizer and a few records of data that make_tiny_llama.py makes inside the
same image. A script that runs must save a real result (an adapter with trained LoRA tensors, or a
full state dict that differs from the initial weights). A script the profile marks unable on the
cpu target must stop with exactly the line the profile says, and doctor must recognise that log
and name a release that runs the script.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from builder.doctor.diagnose import diagnose
from builder.engine.classic import own_hostname
from builder.profile.load import available_stacks, load_stack

from .conftest import FIXTURES, TEST_LABEL, github_reachable, unique
from .test_build_engine import GIT_ONLY

NAMESAKE = FIXTURES / "namesake"
CASES = [(stack, rel, script)
         for stack in available_stacks()
         for rel, release in load_stack(stack).releases.items() if release.namesake is not None
         for script in release.namesake.scripts]

# How each script is started: its own command-line flags only, sized for a tiny CPU run (2 steps).
# The script files are never edited; {src} is the vendored checkout, /w the test's work folder.
COMMANDS = {
    "finetune.py": (
        "cd {src} && python finetune.py --base_model /w/tiny-llama --data_path /w/alpaca.json "
        "--output_dir /w/out --batch_size 4 --micro_batch_size 2 --num_epochs 1 --cutoff_len 64 "
        "--val_set_size 0 --lora_r 4 --lora_target_modules '[q_proj,v_proj]'"
    ),
    "qlora.py": (
        "cd {src} && python qlora.py --model_name_or_path /w/tiny-llama --dataset /w/alpaca.json "
        "--dataset_format alpaca --output_dir /w/out --do_train --do_eval False --max_steps 2 "
        "--per_device_train_batch_size 2 --gradient_accumulation_steps 1 --source_max_len 32 "
        "--target_max_len 32 --lora_r 4 --bits 4 --report_to none --save_strategy no"
    ),
    "fastchat/train/train.py": (
        "cd /w && PYTHONPATH={src} python {src}/fastchat/train/train.py --model_name_or_path /w/tiny-llama "
        "--data_path /w/sharegpt.json --output_dir /w/out --num_train_epochs 1 --max_steps 2 "
        "--per_device_train_batch_size 2 --gradient_accumulation_steps 1 --learning_rate 1e-3 "
        "--model_max_length 256 --save_strategy no --report_to none --lazy_preprocess True"
    ),
    "fastchat/train/train_mem.py": (
        "cd /w && PYTHONPATH={src} python {src}/fastchat/train/train_mem.py --model_name_or_path /w/tiny-llama "
        "--data_path /w/sharegpt.json --output_dir /w/out --num_train_epochs 1 --max_steps 2 "
        "--per_device_train_batch_size 2 --model_max_length 64 --save_strategy no --report_to none"
    ),
    # DeepSpeed's own HF Trainer example, as its run.sh starts it (one process here, through torchrun,
    # which sets the distributed environment DeepSpeed needs) with the image's ZeRO-3 offload config.
    "training/tensor_parallel/hf_integration/train.py": (
        "cd /w && torchrun --nproc_per_node 1 {src}/training/tensor_parallel/hf_integration/train.py "
        "--model_name_or_path /w/tiny-llama --data_path /w/alpaca.json --output_dir /w/out --num_train_epochs 1 "
        "--max_steps 2 --per_device_train_batch_size 2 --gradient_accumulation_steps 1 --learning_rate 1e-3 "
        "--model_max_length 128 --save_strategy no --report_to none --log_level info "
        "--deepspeed /opt/stackbuild/files/ds_config_zero3_offload.json"
    ),
}

# A line that shows the run went the way the stack promises (here: through DeepSpeed's ZeRO offload).
EVIDENCE = {
    "training/tensor_parallel/hf_integration/train.py": "Detected ZeRO Offload",
}

# What a run saved, read inside the image with its own torch: every tensor file under /w/out.
INSPECT = r"""
import glob, json, os, torch
def load(path):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    return torch.load(path, map_location="cpu")
def tensors(folder):
    out = {}
    for path in sorted(glob.glob(folder + "/*model*.bin") + glob.glob(folder + "/*.safetensors")):
        out.update({k: v for k, v in load(path).items() if hasattr(v, "float")})
    return out
saved, initial = tensors("/w/out"), tensors("/w/tiny-llama")
files = {os.path.basename(p): os.path.getsize(p) for p in glob.glob("/w/out/*")}
lora = {k: v for k, v in saved.items() if "lora_" in k}
print("NAMESAKE-RESULT " + json.dumps({
    "files": files,
    "keys": len(saved),
    "lora_keys": len(lora),
    "lora_b_nonzero": sum(1 for k, v in lora.items() if "lora_B" in k and v.float().abs().sum().item() > 0),
    "initial_keys": len(initial),
    "changed": sum(1 for k, v in saved.items() if k in initial and not torch.equal(v.float(), initial[k].float())),
    "shared": sum(1 for k in saved if k in initial),
}))
"""


def _vendored(repository: str, commit: str) -> Path:
    """The fixture folder holding ``repository`` at ``commit`` (found through its ORIGIN file)."""
    for origin in sorted(NAMESAKE.glob("*/ORIGIN")):
        text = origin.read_text(encoding="utf-8")
        if f"repository: {repository}\n" in text and re.search(rf"^commit:\s+{commit}\b", text, re.M):
            return origin.parent
    raise AssertionError(f"{repository}@{commit} is not vendored under {NAMESAKE} (add it with its ORIGIN and LICENSE)")


def _run(docker_client, image: str, work: Path, src: Path, command: str) -> tuple[int, str]:
    name = unique("namesake")
    hostname = own_hostname(name)  # resolvable without a network, as stackbuild's own containers are (torchrun)
    container = docker_client.containers.create(
        image, ["bash", "-o", "pipefail", "-c", command], name=name, network_mode="none",
        hostname=hostname, extra_hosts={hostname: "127.0.0.1"},
        volumes={str(src): {"bind": "/src", "mode": "ro"}, str(work): {"bind": "/w", "mode": "rw"}},
        environment={"HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
                     "WANDB_DISABLED": "true", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"},
        labels={TEST_LABEL: "1"}, working_dir="/w",
    )
    try:
        container.start()
        status = container.wait(timeout=900)
        return status["StatusCode"], container.logs().decode("utf-8", "replace")
    finally:
        container.remove(force=True)


@pytest.mark.parametrize(("stack", "release", "script"), CASES, ids=[f"{s}@{r}:{p}" for s, r, p in CASES])
def test_namesake_script_runs_unchanged_or_fails_as_the_profile_says(stack, release, script, stack_images,
                                                                      docker_client, tmp_path):
    namesake = load_stack(stack).releases[release].namesake
    unable = namesake.unable_for(script, "cpu")
    src = _vendored(namesake.repository, namesake.commit)
    if (stack, release) in GIT_ONLY and not github_reachable():
        # No image can be built here; the profile must say so, why, and what to use instead.
        assert unable is not None and unable.fails_with is None, f"{stack}@{release} must mark {script} unable on cpu"
        assert "github.com" in unable.why and unable.instead
        pytest.skip(f"{stack}@{release} cannot be built here (GitHub pins); its profile marks {script} unable: "
                    f"{unable.why}")
    image = stack_images(stack, release).ref.immutable
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy(NAMESAKE / "make_tiny_llama.py", work)
    command = f"python /w/make_tiny_llama.py /w && {COMMANDS[script].format(src='/src')}"
    if unable is None:
        command += f" && python - <<'EOF'\n{INSPECT}\nEOF"
    code, log = _run(docker_client, image, work, src, command)

    if unable is not None:
        assert unable.fails_with, f"{stack}@{release} marks {script} unable on cpu but gives no fails_with line"
        assert code != 0, log[-3000:]
        assert unable.fails_with in log, log[-3000:]
        if unable.issue:
            # doctor recognises the real log and its fix names what runs the script instead
            diagnoses = diagnose(log, stack=stack, release=release)
            assert diagnoses and diagnoses[0].issue.id == unable.issue, [d.issue.id for d in diagnoses]
            named = re.findall(r"\b[a-z0-9-]+@[0-9][0-9A-Za-z._-]*[0-9]", unable.instead)
            assert all(spec in diagnoses[0].fix for spec in named), (diagnoses[0].fix, named)
        return

    assert code == 0, log[-5000:]
    if script in EVIDENCE:
        assert EVIDENCE[script] in log, log[-5000:]
    result = json.loads(log.rsplit("NAMESAKE-RESULT ", 1)[1].splitlines()[0])
    if script in ("finetune.py", "qlora.py"):  # LoRA trainers
        # a LoRA adapter: real tensors, not the 443-byte empty file of peft-empty-adapter
        adapter = {k: v for k, v in result["files"].items() if k.startswith("adapter_model")}
        assert adapter and max(adapter.values()) > 1024, result
        assert result["lora_keys"] == 2 * 2 * 2, result  # 2 layers x q_proj, v_proj x lora_A, lora_B
        assert result["lora_b_nonzero"] > 0, result  # lora_B starts at zero: trained
    else:
        # a full state dict: every weight of the model, trained away from its initial values
        assert result["keys"] >= result["initial_keys"] > 0, result
        assert result["shared"] == result["initial_keys"], result
        assert result["changed"] > 0, result
