"""The DeepSpeed configs shipped in /opt/stackbuild/files/ parse with DeepSpeed's own config classes.

Every *.json there with a "zero_optimization" block is filled the way the Hugging Face Trainer
fills "auto" values (small concrete numbers), then read by deepspeed.runtime.config.DeepSpeedConfig
(no process group needed: world size 1). What DeepSpeed read must be what the file says: the
ZeRO stage and the offload devices. This also catches a pydantic DeepSpeed cannot use
(deepspeed < 0.10 needs pydantic < 2).
"""

# smoke-runner: preload torch torch._dynamo torch._inductor.compile_fx transformers (what deepspeed imports; not deepspeed itself: it picks its accelerator from the environment when imported)

import glob
import json
import os

from _smoke import context, deepspeed_import_hint, deepspeed_pydantic_conflict, finish, first_line, quiet_stdout

check, manifest = context()
FILES = "/opt/stackbuild/files"
PINS = manifest.get("pins")

quiet_stdout()

# The values the Hugging Face Trainer puts in for "auto" (transformers' HfTrainerDeepSpeedConfig),
# for one process, micro batch 2, no accumulation, and a model with hidden size 64.
HIDDEN = 64
TOP = {
    "train_micro_batch_size_per_gpu": 2,
    "gradient_accumulation_steps": 1,
    "train_batch_size": 2,
    "gradient_clipping": 1.0,
}
HALF = {"fp16": False, "bf16": manifest.get("accelerator") == "cuda"}  # bf16 on the GPUs a CUDA build is for
OPTIMIZER = {"lr": 5e-5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
SCHEDULER = {"warmup_min_lr": 0, "warmup_max_lr": 5e-5, "warmup_num_steps": 0, "total_num_steps": 100,
             "warmup_min_ratio": 0.0, "cos_min_ratio": 0.0001}
ZERO = {"reduce_bucket_size": HIDDEN * HIDDEN, "stage3_prefetch_bucket_size": int(0.9 * HIDDEN * HIDDEN),
        "stage3_param_persistence_threshold": 10 * HIDDEN}


def fill_auto(config):
    """A copy of config with the Trainer's values for "auto"; and the "auto" keys it doesn't know."""
    config = json.loads(json.dumps(config))
    unknown = []

    def fill(block, known, where):
        for key, value in list(block.items()):
            if value == "auto":
                if key in known:
                    block[key] = known[key]
                else:
                    unknown.append(where + key)

    fill(config, TOP, "")
    for section in ("fp16", "bf16"):
        if isinstance(config.get(section), dict):
            fill(config[section], {"enabled": HALF[section]}, section + ".")
    for section, known in (("optimizer", OPTIMIZER), ("scheduler", SCHEDULER)):
        if isinstance(config.get(section), dict) and isinstance(config[section].get("params"), dict):
            fill(config[section]["params"], known, section + ".params.")
    if isinstance(config.get("zero_optimization"), dict):
        fill(config["zero_optimization"], ZERO, "zero_optimization.")
    return config, unknown


def plain(value):
    return getattr(value, "value", value)  # DeepSpeed's enums (OffloadDeviceEnum) -> their string


paths = sorted(glob.glob(os.path.join(FILES, "*.json")))
for name in manifest.get("files") or []:
    if name.endswith(".json") and not os.path.isfile(os.path.join(FILES, name)):
        finish("fail", "{} is listed in the manifest but missing from {} (rebuild the image)".format(name, FILES))
configs = []
for path in paths:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except ValueError as exc:
        finish("fail", "{} is not valid JSON: {} (fix the file in the stack's files:)".format(path, exc))
    if isinstance(data, dict) and "zero_optimization" in data:
        configs.append((path, data))
if not configs:
    finish("skip", "no DeepSpeed config (a *.json with zero_optimization) in {}".format(FILES))

try:
    import deepspeed
    from deepspeed.runtime.config import DeepSpeedConfig
except Exception as exc:
    hint = deepspeed_import_hint(PINS)
    finish("fail", "import deepspeed fails: {} ({})".format(first_line(exc), hint))

done = []
problems = []
for path, data in configs:
    name = os.path.basename(path)
    filled, unknown = fill_auto(data)
    if unknown:
        problems.append("{}: 'auto' where the HF Trainer fills nothing: {} (set concrete values)".format(
            name, ", ".join(unknown)))
        continue
    try:
        parsed = DeepSpeedConfig(filled)
    except Exception as exc:
        hint = deepspeed_pydantic_conflict(PINS)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()][:3]  # pydantic: field, reason
        problems.append("DeepSpeed {} rejects {}: {}: {} ({})".format(
            deepspeed.__version__, name, type(exc).__name__, " | ".join(lines),
            hint or "fix the config in the stack's files:"))
        continue
    zero_file = data["zero_optimization"]
    zero = parsed.zero_config
    read = ["stage {}".format(parsed.zero_optimization_stage)]
    if parsed.zero_optimization_stage != zero_file.get("stage", 0):
        problems.append("{}: DeepSpeed read ZeRO stage {}, the file says {}".format(
            name, parsed.zero_optimization_stage, zero_file.get("stage")))
    for block in ("offload_optimizer", "offload_param"):
        wanted = (zero_file.get(block) or {}).get("device")
        if wanted is None:
            continue
        got = getattr(zero, block, None)
        got = plain(getattr(got, "device", None)) if got is not None else None
        read.append("{} {}".format(block, got))
        if got != wanted:
            problems.append("{}: DeepSpeed read {}.device {!r}, the file says {!r}".format(name, block, got, wanted))
    done.append("{} ({})".format(name, ", ".join(read)))

if not problems and deepspeed_pydantic_conflict(PINS):
    problems.append(deepspeed_pydantic_conflict(PINS))
if problems:
    finish("fail", "; ".join(problems))
finish("pass", "DeepSpeed {} parsed {} with the HF Trainer's 'auto' values filled in".format(
    deepspeed.__version__, "; ".join(done)))
