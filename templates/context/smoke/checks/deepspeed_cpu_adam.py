"""DeepSpeedCPUAdam, from its pre-built cpu_adam op, steps a parameter as torch.optim.AdamW does.

The optimizer ZeRO-Offload runs on the CPU. It takes three steps on a small parameter with weight
decay; the result must match torch.optim.AdamW's with the same settings. The op has to come
from the .so inside the deepspeed package: a JIT build is blocked and counts as a failure. The
numeric part runs in a child process, so that an op compiled for another CPU (DeepSpeed builds
with -march=native) is reported as such instead of crashing the check.
"""

# smoke-runner: preload torch torch._dynamo torch._inductor.compile_fx transformers (what deepspeed imports; not deepspeed itself: it picks its accelerator from the environment when imported)

import json
import os
import signal
import subprocess
import sys

from _smoke import context, deepspeed_import_hint, deepspeed_setup, finish, first_line, quiet_stdout, report

check, manifest = context()
CHILD = len(sys.argv) > 2 and sys.argv[2] == "--child"
FIX = "build DeepSpeed with DS_BUILD_CPU_ADAM=1, with python3-dev and a C++ compiler in the image"


if not CHILD:
    # Parent: run the numeric part in a child and relay its one result line.
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), sys.argv[1], "--child"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if proc.returncode < 0:
        sig = -proc.returncode
        name = signal.Signals(sig).name if sig in {s.value for s in signal.Signals} else str(sig)
        hint = ""
        if sig == signal.SIGILL:
            hint = (" (an illegal instruction: DeepSpeed compiled cpu_adam with -march=native, so the image runs "
                    "only on CPUs with the build host's instruction set, see /opt/stackbuild/build-host-cpu.txt; "
                    "rebuild the image on this kind of host)")
        report("fail", "DeepSpeedCPUAdam step killed by {}{}".format(name, hint))
    for line in reversed(proc.stdout.strip().splitlines()):
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and "status" in result:
            report(result["status"], result["detail"])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    report("fail", "the DeepSpeedCPUAdam step crashed (exit {}): {}".format(proc.returncode, " | ".join(tail)))

# Child: DeepSpeed logs on stdout; send fd 1 to stderr until the result line.
quiet_stdout()

deepspeed_setup(manifest)

try:
    import torch
    import deepspeed
    from deepspeed.ops.adam import DeepSpeedCPUAdam
    from deepspeed.ops.op_builder.builder import OpBuilder
except Exception as exc:
    finish("fail", "import deepspeed fails: {} ({})".format(first_line(exc), deepspeed_import_hint()))


def no_jit(self, *args, **kwargs):
    raise RuntimeError("cpu_adam is not pre-built: DeepSpeed would JIT-compile {}".format(self.name))


OpBuilder.jit_load = no_jit

package_dir = os.path.dirname(os.path.abspath(deepspeed.__file__))
settings = dict(lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
torch.manual_seed(0)
start = torch.randn(64, 33)
grads = [torch.randn(64, 33) for _ in range(3)]
ours = torch.nn.Parameter(start.clone())
reference = torch.nn.Parameter(start.clone())
try:
    optimizer = DeepSpeedCPUAdam([ours], adamw_mode=True, **settings)
except Exception as exc:
    finish("fail", "DeepSpeedCPUAdam cannot load its op: {} ({})".format(first_line(exc), FIX))
where = os.path.abspath(getattr(optimizer.ds_opt_adam, "__file__", "") or "")
if not where.startswith(package_dir + os.sep):
    finish("fail", "cpu_adam was loaded from {}, not from the deepspeed package ({})".format(where, FIX))
torch_optimizer = torch.optim.AdamW([reference], **settings)
try:
    for grad in grads:
        ours.grad = grad.clone()
        optimizer.step()
        reference.grad = grad.clone()
        torch_optimizer.step()
except Exception as exc:
    finish("fail", "DeepSpeedCPUAdam.step fails: {} ({})".format(first_line(exc), FIX))
moved = (ours.data - start).abs().max().item()
error = (ours.data - reference.data).abs().max().item()
if moved < 1e-3:
    finish("fail", "DeepSpeedCPUAdam left the parameter unchanged (moved {:.2e}) ({})".format(moved, FIX))
if not torch.allclose(ours.data, reference.data, rtol=1e-4, atol=1e-5):
    finish("fail", "DeepSpeedCPUAdam disagrees with torch.optim.AdamW after 3 steps: max difference {:.2e} "
                   "(a miscompiled cpu_adam; {})".format(error, FIX))
finish("pass", "DeepSpeed {} cpu_adam from {}: 3 steps moved the parameter by up to {:.3f}, within {:.1e} of "
               "torch.optim.AdamW".format(deepspeed.__version__, os.path.relpath(where, os.path.dirname(package_dir)),
                                          moved, error))
