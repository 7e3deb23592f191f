"""A matrix product on each GPU matches the CPU: torch has kernels for these GPUs (sm_90 needs cu118+)."""

# smoke-runner: preload torch

from _smoke import context, gpu_count, report

context()
count = gpu_count()
if count == 0:
    report("skip", "no GPU visible (run with --gpus all on a GPU host)")
import torch  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.manual_seed(0)
a, b = torch.randn(256, 256, dtype=torch.float64), torch.randn(256, 256, dtype=torch.float64)
expected = (a @ b).float()
problems, names = [], []
for index in range(count):
    device = torch.device("cuda", index)
    name = torch.cuda.get_device_name(index)
    try:
        got = (a.float().to(device) @ b.float().to(device)).cpu()
        torch.cuda.synchronize(device)
    except RuntimeError as exc:
        problems.append("GPU {} ({}): {}".format(index, name, str(exc).splitlines()[0]))
        continue
    if not torch.allclose(got, expected, rtol=1e-3, atol=1e-3):
        problems.append("GPU {} ({}): result differs from the CPU by {:.3g}".format(
            index, name, (got - expected).abs().max().item()))
        continue
    names.append(name)
if problems:
    report("fail", "; ".join(problems) + " (torch {} has kernels for {}: use a torch build for this GPU, e.g. "
                   "+cu118 or newer for sm_90)".format(torch.__version__, " ".join(torch.cuda.get_arch_list())))
report("pass", "matmul matches the CPU on {} GPU(s): {}".format(count, ", ".join(names)))
