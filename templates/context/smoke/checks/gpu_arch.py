"""Each GPU's compute capability is one this image has kernels for (torch, compiled ops, flash-attn)."""

# smoke-runner: preload torch

from _smoke import context, gpu_count, report

_, manifest = context()
count = gpu_count()
if count == 0:
    report("skip", "no GPU visible (run with --gpus all on a GPU host)")
import torch  # noqa: E402


def parse(archs):
    """'8.0;9.0+PTX' or '80;90' -> [((8, 0), False), ((9, 0), True)]."""
    out = []
    for item in archs.replace(",", ";").replace(" ", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        ptx = item.endswith("+PTX")
        digits = item.replace("+PTX", "").replace(".", "").replace("sm_", "").replace("compute_", "")
        digits = "".join(ch for ch in digits if ch.isdigit())
        if len(digits) >= 2:
            out.append(((int(digits[:-1]), int(digits[-1])), ptx))
    return out


def covered(cap, archs):
    """A cubin runs on its major version at the same or a higher minor; PTX JIT-compiles for anything newer."""
    return any((arch[0] == cap[0] and arch[1] <= cap[1]) or (ptx and arch <= cap) for arch, ptx in archs)


torch_archs = [((int(a[3:-1]), int(a[-1])), a.startswith("compute_")) for a in torch.cuda.get_arch_list()
               if a[-2:].isdigit()]
compiled = []
for step in manifest.get("compiled", []):
    env = step.get("env", {})
    for key in ("FLASH_ATTN_CUDA_ARCHS", "TORCH_CUDA_ARCH_LIST"):
        if env.get(key):
            compiled.append(("{} ({})".format(step["package"], key), parse(env[key])))
            break
flash = manifest.get("pins", {}).get("flash-attn", "")
xformers = "xformers" in manifest.get("options", [])
problems, warnings, seen = [], [], []
for index in range(count):
    cap = torch.cuda.get_device_capability(index)
    name = "GPU {} ({}, sm_{}{})".format(index, torch.cuda.get_device_name(index), cap[0], cap[1])
    seen.append(name)
    if not covered(cap, torch_archs):
        problems.append("{}: torch {} has no kernels for it (has {})".format(
            name, torch.__version__, " ".join(torch.cuda.get_arch_list())))
    for what, archs in compiled:
        if not covered(cap, archs):
            problems.append("{}: {} was compiled for {} only".format(
                name, what, " ".join("{}.{}".format(*a) for a, _ in archs)))
    if flash and cap < (8, 0):
        message = "{}: flash-attn needs Ampere or newer (sm80+)".format(name)
        (warnings if xformers else problems).append(
            message + (" - use xformers attention (this image has the xformers option)" if xformers
                       else " - build with --with xformers and use memory-efficient attention"))
    elif flash.startswith("1.") and cap not in ((8, 0), (9, 0)):
        warnings.append("{}: flash-attn 1.x backward with head_dim > 64 (every LLaMA size) needs sm80 or sm90 - "
                        "use the current release (flash-attn 2)".format(name))
if problems:
    report("fail", "; ".join(problems) + " (build for this GPU: add its arch to the target's arch_list)")
if warnings:
    report("warn", "; ".join(warnings))
report("pass", "kernels for every GPU: " + ", ".join(seen))
