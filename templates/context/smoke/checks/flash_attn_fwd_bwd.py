"""flash-attn forward and backward at head_dim 128 (LLaMA's) match plain attention on each GPU."""

# smoke-runner: preload torch

from _smoke import context, first_line, gpu_count, report

_, manifest = context()
version = manifest.get("pins", {}).get("flash-attn")
if version is None:
    report("skip", "flash-attn is not in this image (the {} target does not build it)".format(manifest["target"]))
count = gpu_count()
if count == 0:
    report("skip", "no GPU visible (run with --gpus all on a GPU host)")
try:
    import torch
    if version.startswith("1."):
        from flash_attn.flash_attn_interface import flash_attn_unpadded_func
    else:
        from flash_attn import flash_attn_func
except Exception as exc:  # not built, or built against another torch (undefined symbol)
    report("fail", "importing flash-attn {} fails: {} (build it against this torch: pip install "
                   "--no-build-isolation flash-attn=={} after torch)".format(version, first_line(exc), version))

BATCH, SEQ, HEADS, DIM = 2, 256, 4, 128


def reference(q, k, v):
    """Causal softmax attention in float32; q, k, v are (batch, seq, heads, dim)."""
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) / DIM ** 0.5
    mask = torch.ones(SEQ, SEQ, dtype=torch.bool, device=q.device).triu(1)
    out = scores.masked_fill(mask, float("-inf")).softmax(-1) @ v
    return out.transpose(1, 2)


def flash(q, k, v):
    if version.startswith("1."):
        cu = torch.arange(0, (BATCH + 1) * SEQ, SEQ, dtype=torch.int32, device=q.device)
        flat = [t.reshape(BATCH * SEQ, HEADS, DIM) for t in (q, k, v)]
        return flash_attn_unpadded_func(*flat, cu, cu, SEQ, SEQ, 0.0, causal=True).reshape(BATCH, SEQ, HEADS, DIM)
    return flash_attn_func(q, k, v, causal=True)


problems, passed = [], []
for index in range(count):
    device = torch.device("cuda", index)
    name = "GPU {} ({})".format(index, torch.cuda.get_device_name(index))
    torch.manual_seed(index)
    inputs = [torch.randn(BATCH, SEQ, HEADS, DIM, device=device, dtype=torch.float16, requires_grad=True)
              for _ in range(3)]
    grad = torch.randn(BATCH, SEQ, HEADS, DIM, device=device, dtype=torch.float16)
    try:
        out = flash(*inputs)
        got = torch.autograd.grad(out, inputs, grad)
    except Exception as exc:  # RuntimeError (no kernel image, CUDA error), or what the kernel wrapper raises
        problems.append("{}: {}".format(name, str(exc).splitlines()[0]))
        continue
    leaves = [t.detach().float().requires_grad_() for t in inputs]
    ref = reference(*leaves)
    want = torch.autograd.grad(ref, leaves, grad.float())
    errors = {"out": (out.float() - ref).abs().max().item()}
    for label, g, w in zip(("dq", "dk", "dv"), got, want):
        errors[label] = ((g.float() - w).abs().max() / w.abs().max().clamp_min(1e-6)).item()
    worst = max(errors, key=errors.get)
    if errors[worst] > 2e-2:
        problems.append("{}: {} differs from reference attention by {:.3g}".format(name, worst, errors[worst]))
        continue
    passed.append("{} (max error {:.1e})".format(name, errors[worst]))
if problems:
    report("fail", "; ".join(problems) + " (flash-attn {} needs sm80+; 1.x backward at head_dim 128 needs sm80/sm90 "
                                          "- on other GPUs use flash-attn 2 or xformers)".format(version))
report("pass", "flash-attn {} forward+backward, head_dim {}: {}".format(version, DIM, ", ".join(passed)))
