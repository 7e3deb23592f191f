"""Memory of one training step: AdamW vs LOMO vs AdaLomo (the lomo option's claim, measured).

Two runs, each optimizer in a process of its own so that every peak is its own:

    python bench/lomo_memory.py cpu [--image IMAGE]
        On the CI host: peak RSS of one step of a small random-init LLaMA (fp32, about 91M
        parameters) inside the lomo image (default stackbuild/alpaca-lora:2026.11-cpu-lomo, made by
        `stackbuild build alpaca-lora --with lomo --target cpu`), one `docker run` per optimizer,
        offline.

    python bench/lomo_memory.py gpu [--out FILE]
        On a GPU host whose Python has torch, transformers and lomo-optim: peak CUDA memory
        (torch.cuda.max_memory_allocated) of one step of a random-init LLaMA-7B config
        (6.74B parameters; weights need not be real to measure memory), batch 1 x 512 tokens,
        activation checkpointing on. AdamW twice: the usual mixed precision (fp32 weights,
        gradients and states, bf16 autocast: what the Trainer does with bf16=True on an fp32
        model) and everything in bf16; LOMO and AdaLomo with bf16 weights, as their papers run
        them. An out-of-memory error is caught and reported as such, with the peak reached.
        --out writes the table as Markdown (bench/results/).

    python bench/lomo_memory.py one OPTIMIZER DEVICE MODEL
        One measurement (what the two above run in each process): prints one JSON line.

Each run prints a table with every optimizer's peak and its ratio to AdamW's. A "step" is what a
user's loop (or the Trainer) does once: forward, then loss.backward() and optimizer.step() for
AdamW, optimizer.fused_backward(loss, lr) for LOMO and AdaLomo. lomo-optim 0.1.1 creates AdaLomo's
moments with .cuda() (adalomo-cuda-only): on the CPU this bench redirects those calls to the CPU
while the optimizer is built, so the CPU row shows what AdaLomo would hold there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODELS = {
    # small: CPU-sized, still LLaMA-shaped (vocab 32000 makes embeddings a realistic share)
    "small": dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=6,
                  num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=1024),
    # LLaMA-7B's published configuration
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048),
}
SEQ = {"small": 256, "7b": 512}
CPU_RUNS = ["adamw", "lomo", "adalomo"]
GPU_RUNS = ["adamw-mixed", "adamw-bf16", "lomo", "adalomo"]
DESCRIBE = {
    "adamw": "AdamW (torch), fp32 weights, gradients and states",
    "adamw-mixed": "AdamW (torch), fp32 weights/gradients/states, bf16 autocast (Trainer bf16=True)",
    "adamw-bf16": "AdamW (torch), bf16 weights, gradients and states",
    "lomo": "LOMO (lomo-optim), fused backward, no state",
    "adalomo": "AdaLomo (lomo-optim), fused backward, factored second moments",
}
GIB = 1024 ** 3


# ------------------------------------------------------------------------------------------------
# One measurement (runs in its own process; imports torch only here)
# ------------------------------------------------------------------------------------------------

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def one(optimizer: str, device: str, model_size: str) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cuda = device == "cuda"
    weights_dtype = torch.float32 if (not cuda or optimizer == "adamw-mixed") else torch.bfloat16
    result = {"optimizer": optimizer, "device": device, "model": model_size, "status": "ok",
              "weights_dtype": str(weights_dtype).replace("torch.", "")}
    if cuda:
        result["gpu"] = torch.cuda.get_device_name(0)
    torch.manual_seed(0)
    config = LlamaConfig(**MODELS[model_size])
    config.use_cache = False
    phase = "building the model"
    try:
        default = torch.get_default_dtype()
        torch.set_default_dtype(weights_dtype)  # built in its dtype: no fp32 copy on the way
        try:
            with torch.device(device):
                model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(default)
        model.gradient_checkpointing_enable()
        model.train()
        result["parameters"] = sum(p.numel() for p in model.parameters())
        phase = "building the optimizer"
        lr = 1e-5
        if optimizer.startswith("adamw"):
            opt = torch.optim.AdamW(model.parameters(), lr=lr)
        else:
            import lomo_optim
            result["lomo_optim"] = lomo_optim.__version__
            if optimizer == "lomo":
                opt = lomo_optim.Lomo(model, lr=lr)
            else:
                original = torch.Tensor.cuda
                if not cuda:  # lomo-optim 0.1.1 hard-codes .cuda() for AdaLomo's moments
                    torch.Tensor.cuda = lambda self, *args, **kwargs: self
                try:
                    opt = lomo_optim.AdaLomo(model, lr=lr)
                finally:
                    torch.Tensor.cuda = original
        ids = torch.randint(0, config.vocab_size, (1, SEQ[model_size]), device=device,
                            generator=torch.Generator(device=device).manual_seed(1))
        if cuda:
            torch.cuda.synchronize()
            result["before_step_bytes"] = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            result["before_step_bytes"] = _rss_bytes()
        phase = "the training step"
        start = time.perf_counter()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=optimizer == "adamw-mixed")
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        if optimizer.startswith("adamw"):
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            opt.fused_backward(loss, lr)
        if cuda:
            torch.cuda.synchronize()
        result["step_s"] = round(time.perf_counter() - start, 2)
        result["loss"] = round(float(loss), 4)
        result["grads_left"] = sum(1 for p in model.parameters() if p.grad is not None)
    except torch.cuda.OutOfMemoryError as exc:
        result.update(status="oom", phase=phase, error=str(exc).splitlines()[0][:200])
    if cuda:
        result["peak_bytes"] = torch.cuda.max_memory_allocated()
        result["device_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
    else:
        result["peak_bytes"] = _peak_rss_bytes()
    return result


# ------------------------------------------------------------------------------------------------
# The runs: one process per optimizer, then the table
# ------------------------------------------------------------------------------------------------

def _json_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


def _run(command: list[str], optimizer: str, timeout: int) -> dict:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"optimizer": optimizer, "status": f"timed out after {timeout} s"}
    found = _json_line(proc.stdout)
    if found is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        killed = " (killed: out of host memory?)" if proc.returncode in (-9, 137) else ""
        return {"optimizer": optimizer, "status": f"exit {proc.returncode}{killed}: {tail}"}
    return found


def table(results: list[dict], measure: str) -> tuple[str, str]:
    """The Markdown table (each optimizer's peak, what the step added, both as ratios to AdamW's) and
    the model's size in words."""
    base = next((r for r in results if r["optimizer"].startswith("adamw") and r.get("status") == "ok"), None)
    lines = [f"| optimizer | {measure} before the step | peak {measure} of one step | added by the step | "
             "peak vs AdamW | added vs AdamW | step | gradients left |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        peak, before, status = r.get("peak_bytes"), r.get("before_step_bytes"), r.get("status")
        ok = status == "ok" and peak is not None and before is not None
        if ok:
            cell, added = f"{peak / GIB:.2f} GiB", f"{(peak - before) / GIB:.2f} GiB"
        elif status == "oom":
            cell = f"**out of memory** in {r['phase']} ({peak / GIB:.2f} GiB allocated at the failure)"
            added = "-"
        else:
            cell, added = str(status), "-"
        ratio = f"{peak / base['peak_bytes']:.2f}x" if ok and base else "-"
        base_added = base["peak_bytes"] - base["before_step_bytes"] if base else 0
        added_ratio = f"{(peak - before) / base_added:.2f}x" if ok and base and base_added > 0 else "-"
        held = f"{before / GIB:.2f} GiB" if before is not None else "-"
        step = f"{r['step_s']} s" if "step_s" in r else "-"
        left = r.get("grads_left", "-")
        name = DESCRIBE.get(r["optimizer"], r["optimizer"])
        lines.append(f"| {name} | {held} | {cell} | {added} | {ratio} | {added_ratio} | {step} | {left} |")
    params = next((r["parameters"] for r in results if r.get("parameters")), None)
    size = "" if not params else (f"{params / 1e9:.2f}B parameters" if params > 1e9 else f"{params / 1e6:.0f}M parameters")
    return "\n".join(lines), size


def run_cpu(image: str) -> int:
    here = Path(__file__).resolve().parent
    results = []
    for optimizer in CPU_RUNS:
        command = ["docker", "run", "--rm", "--network", "none", "--label", "io.stackbuild.bench=lomo-memory",
                   "-e", "OMP_NUM_THREADS=2", "-v", f"{here}:/bench:ro", image,
                   "python", "/bench/lomo_memory.py", "one", optimizer, "cpu", "small"]
        print(f"{optimizer}: one step in its own container ...", file=sys.stderr, flush=True)
        results.append(_run(command, optimizer, 1800))
    text, head = table(results, "RSS")
    print(f"Peak RSS of one training step, small random-init LLaMA ({head}, fp32, 1 x {SEQ['small']} tokens, "
          f"activation checkpointing), image {image}:\n")
    print(text)
    return 0 if all(r.get("status") == "ok" for r in results) else 1


def run_gpu(out: str | None) -> int:
    results = []
    for optimizer in GPU_RUNS:
        print(f"{optimizer}: one step in its own process ...", file=sys.stderr, flush=True)
        results.append(_run([sys.executable, __file__, "one", optimizer, "cuda", "7b"], optimizer, 900))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    text, head = table(results, "CUDA memory")
    gpu = next((r["gpu"] for r in results if r.get("gpu")), "?")
    total = next((r["device_total_bytes"] for r in results if r.get("device_total_bytes")), 0)
    title = (f"Peak CUDA memory of one training step, random-init LLaMA-7B config ({head}), batch 1 x {SEQ['7b']} "
             f"tokens, activation checkpointing, on {gpu} ({total / GIB:.1f} GiB)")
    print(title + ":\n")
    print(text)
    if out:
        Path(out).write_text(f"# {title}\n\nMade by `python bench/lomo_memory.py gpu --out {out}`.\n\n{text}\n\n"
                             + "".join(f"    {json.dumps(r)}\n" for r in results))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cpu = sub.add_parser("cpu")
    cpu.add_argument("--image", default="stackbuild/alpaca-lora:2026.11-cpu-lomo")
    gpu = sub.add_parser("gpu")
    gpu.add_argument("--out")
    single = sub.add_parser("one")
    single.add_argument("optimizer", choices=sorted(DESCRIBE))
    single.add_argument("device", choices=["cpu", "cuda"])
    single.add_argument("model", choices=sorted(MODELS))
    args = parser.parse_args(argv)
    if args.command == "one":
        print(json.dumps(one(args.optimizer, args.device, args.model)), flush=True)
        return 0
    return run_cpu(args.image) if args.command == "cpu" else run_gpu(args.out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
