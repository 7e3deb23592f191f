"""A tiny model trains a few steps with ZeRO-3, optimizer and parameters offloaded to CPU.

One process (world size 1, a free local port), or one rank of several when DeepSpeed's launcher
started it (its RANK / WORLD_SIZE / MASTER_* are kept): deepspeed.initialize with the image's shipped
ZeRO config when there is one ("auto" filled in as the HF Trainer would), else stage 3 with both
offloads to cpu. The engine's optimizer must be DeepSpeedZeroOptimizer_Stage3 with optimizer and
parameter offload on and DeepSpeedCPUAdam inside; the loss must go down and the parameters change.
No op may be JIT-compiled on the way (that is what took minutes before). It runs on the GPU when
there is one; without one only where DeepSpeed has a CPU accelerator (>= 0.10 on the cpu target),
otherwise it is skipped.
"""

# smoke-runner: preload torch torch._dynamo torch._inductor.compile_fx transformers (what deepspeed imports; not deepspeed itself: it picks its accelerator from the environment when imported)

import glob
import json
import os
import socket
import time

from _smoke import (context, deepspeed_import_hint, deepspeed_setup, finish, first_line, gpu_count,
                    quiet_stdout)

check, manifest = context()
started = time.monotonic()
FILES = "/opt/stackbuild/files"

quiet_stdout()


def free_port():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


gpus = gpu_count()
if gpus == 0 and manifest.get("accelerator") == "cuda":
    finish("skip", "no GPU: the cuda target's DeepSpeed ops are built for the CUDA accelerator")
build_env = deepspeed_setup(manifest, "cpu" if gpus == 0 else None)
if gpus == 0:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one process on this host: gloo on loopback
if "LOCAL_RANK" not in os.environ:  # one process of its own; under DeepSpeed's launcher, one rank of several
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_SIZE="1")
world = int(os.environ.get("WORLD_SIZE", "1"))

try:
    import torch
    import deepspeed
    from deepspeed.ops.op_builder.builder import OpBuilder
except Exception as exc:
    if gpus == 0 and ("CPU_Accelerator" in str(exc) or "intel_extension_for_pytorch" in str(exc)):
        # DeepSpeed 0.9 picks its accelerator on import; its CPU one needs Intel's extension and oneCCL
        finish("skip", "no GPU: this DeepSpeed has no usable CPU accelerator ({}), and its ZeRO-3 needs NCCL "
                       "and CUDA".format(first_line(exc)))
    finish("fail", "import deepspeed fails: {} ({})".format(first_line(exc), deepspeed_import_hint()))

try:
    from deepspeed.accelerator import get_accelerator
    accelerator = get_accelerator()
    accelerator_name = accelerator._name if hasattr(accelerator, "_name") else accelerator.device_name()
except Exception as exc:  # 0.9: DS_ACCELERATOR=cpu needs intel_extension_for_pytorch
    if gpus == 0:
        finish("skip", "no GPU: DeepSpeed {} has no usable CPU accelerator ({}), and its ZeRO-3 needs NCCL and "
                       "CUDA".format(deepspeed.__version__, first_line(exc)))
    finish("fail", "DeepSpeed {} cannot pick an accelerator: {}".format(deepspeed.__version__, first_line(exc)))
if gpus == 0 and accelerator_name != "cpu":
    finish("skip", "no GPU: DeepSpeed {} picked accelerator {}, not cpu, so ZeRO-3 cannot run here".format(
        deepspeed.__version__, accelerator_name))


def no_jit(self, *args, **kwargs):
    raise RuntimeError("DeepSpeed would JIT-compile {} (not pre-built): build DeepSpeed with {}=1".format(
        self.name, self.BUILD_VAR))


OpBuilder.jit_load = no_jit

# The ZeRO block: the image's own config if it ships one, "auto" as the HF Trainer fills it for
# hidden size 32; pinned memory only where there is a GPU to pin for.
HIDDEN = 32
AUTO = {"reduce_bucket_size": HIDDEN * HIDDEN, "stage3_prefetch_bucket_size": int(0.9 * HIDDEN * HIDDEN),
        "stage3_param_persistence_threshold": 10 * HIDDEN}
zero, source = None, "a built-in ZeRO-3 config"
for path in sorted(glob.glob(os.path.join(FILES, "*.json"))):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except ValueError:
        continue
    block = data.get("zero_optimization") if isinstance(data, dict) else None
    if isinstance(block, dict) and block.get("stage") == 3:
        zero, source = json.loads(json.dumps(block)), os.path.basename(path)
        break
if zero is None:
    zero = {"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}}
for key, value in list(zero.items()):
    if value == "auto":
        zero[key] = AUTO.get(key, None)
        if zero[key] is None:
            del zero[key]
zero["stage"] = 3
for block in ("offload_optimizer", "offload_param"):
    zero[block] = dict(zero.get(block) or {}, device="cpu")
    if gpus == 0:
        zero[block]["pin_memory"] = False
config = {
    "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "train_batch_size": 4 * world,
    "gradient_clipping": 1.0, "steps_per_print": 1000000, "wall_clock_breakdown": False,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}},
    "zero_optimization": zero,
}
if gpus > 0 and accelerator.is_bf16_supported():
    config["bf16"] = {"enabled": True}

try:
    import logging
    deepspeed.utils.logger.setLevel(logging.WARNING)
    backend = None
    if gpus == 0:
        backend = "gloo"
        if accelerator.communication_backend_name() == "ccl":
            try:
                import oneccl_bindings_for_pytorch  # noqa: F401
                backend = "ccl"
            except ImportError:
                pass
    deepspeed.init_distributed(dist_backend=backend) if backend else deepspeed.init_distributed()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 4))
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    params = list(engine.module.parameters())

    def weights():
        with deepspeed.zero.GatheredParameters(params):
            return [p.detach().float().cpu().clone() for p in params]

    before = weights()
    x = torch.randn(4, 16).to(engine.device)
    y = torch.randn(4, 4).to(engine.device)
    if config.get("bf16"):
        x = x.to(torch.bfloat16)
    losses = []
    for _ in range(5):
        out = engine(x)
        loss = torch.nn.functional.mse_loss(out.float(), y.float())
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    after = weights()
except Exception as exc:
    if "JIT-compile" in str(exc):
        fix = "(no op may be JIT-compiled here)"
    elif isinstance(exc, ImportError) or "deepspeed.ops." in str(exc) or "undefined symbol" in str(exc):
        fix = ("(a pre-built DeepSpeed op is missing or broken: build with DS_BUILD_CPU_ADAM=1, and "
               "DS_BUILD_SHM_COMM=1 on the cpu accelerator; the deepspeed-ops check tells which)")
    else:
        fix = "(see the stderr of this check)"
    finish("fail", "ZeRO-3 offload training fails on {}: {} {}".format(
        "the GPU" if gpus else "the CPU", first_line(exc), fix))
seconds = time.monotonic() - started

zero_optimizer = engine.optimizer
problems = []
if type(zero_optimizer).__name__ != "DeepSpeedZeroOptimizer_Stage3":
    problems.append("the engine's optimizer is {}, not DeepSpeedZeroOptimizer_Stage3".format(
        type(zero_optimizer).__name__))
for flag in ("offload_optimizer", "offload_param"):
    if getattr(zero_optimizer, flag, None) is not True:
        problems.append("{}.{} is {}".format(type(zero_optimizer).__name__, flag, getattr(zero_optimizer, flag, None)))
inner = type(getattr(zero_optimizer, "optimizer", None)).__name__
if inner != "DeepSpeedCPUAdam":
    problems.append("the offloaded optimizer is {}, not DeepSpeedCPUAdam".format(inner))
changed = max((a - b).abs().max().item() for a, b in zip(after, before))
if changed == 0:
    problems.append("the parameters did not change")
if not losses[-1] < losses[0]:
    problems.append("the loss did not go down: {}".format(", ".join("{:.4f}".format(v) for v in losses)))
if problems:
    finish("fail", "ZeRO-3 offload with DeepSpeed {}: {}".format(deepspeed.__version__, "; ".join(problems)))
detail = ("DeepSpeed {} ZeRO-3 ({}) on {} ({}): DeepSpeedZeroOptimizer_Stage3 with optimizer and parameter offload "
          "to cpu, DeepSpeedCPUAdam; 5 steps, loss {:.4f} -> {:.4f}, in {:.0f} s".format(
              deepspeed.__version__, source,
              ("rank {} of {} GPUs".format(os.environ.get("RANK"), world) if world > 1 else "the GPU") if gpus
              else "the CPU", accelerator_name, losses[0], losses[-1], seconds))
if seconds > 60:
    finish("warn", detail + " (over 60 s: something was slow; a JIT build would have failed)")
finish("pass", detail)
