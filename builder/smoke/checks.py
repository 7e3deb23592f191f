"""The smoke checks an image can carry (pure data: rendering reads it, nothing here runs them).

Each check is a file in templates/context/smoke/checks/, copied into every image with the
runner; the image's manifest lists the checks of its stack x release x target, so a pulled image
can prove itself. An image carries the common checks, the checks that prove each fix its release
claims (the knowledge base's ``proven_by``), the patch check where it has patches, and the
checks its profile names under ``checks:``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SmokeCheck:
    name: str
    file: str
    summary: str
    gpu: bool = False  # needs a GPU for all it proves: reports skip without one, never pass
    timeout: int = 600


CHECKS: dict[str, SmokeCheck] = {c.name: c for c in (
    # every image
    SmokeCheck("python-version", "python_version.py", "the image's Python is the release's"),
    SmokeCheck("pins", "pins.py", "every pinned package at its version, importable"),
    SmokeCheck("pip-check", "pip_check.py", "pip check finds no broken requirement"),
    SmokeCheck("lock", "lock.py", "the installed packages are exactly the lock's, no more, no fewer"),
    SmokeCheck("torch-compile", "torch_compile.py", "torch.compile of a tiny function runs"),
    SmokeCheck("shm", "shm.py", "/dev/shm is there and holds a shared memory segment; warns under 1 GB"),
    SmokeCheck("gpu-matmul", "gpu_matmul.py", "a matrix product on each GPU matches the CPU", gpu=True),
    SmokeCheck("cuda-binaries", "cuda_binaries.py",
               "compiled extensions hold device code for exactly the arch list; every library resolves; one file "
               "per CUDA library"),
    # proofs of the fixes a release claims (named by the knowledge base's proven_by)
    SmokeCheck("patches", "patches.py", "every checked source patch is in the installed package"),
    SmokeCheck("numpy-torch", "numpy_torch.py", "numpy arrays and torch tensors convert both ways"),
    SmokeCheck("datasets-load-json", "datasets_json.py", "datasets loads a local JSON file offline"),
    SmokeCheck("ninja", "ninja.py", "ninja is there for DeepSpeed's and torch's JIT builds"),
    SmokeCheck("deepspeed-ops", "deepspeed_ops.py",
               "the ops DeepSpeed reports as pre-built load from the image; async_io reads and writes"),
    SmokeCheck("deepspeed-cpu-adam", "deepspeed_cpu_adam.py", "DeepSpeedCPUAdam takes a step with its pre-built op"),
    SmokeCheck("deepspeed-config", "deepspeed_config.py", "the shipped ds_config parses with DeepSpeed's own classes"),
    SmokeCheck("deepspeed-zero3-offload", "deepspeed_zero3.py",
               "a tiny model trains ZeRO-3 steps with optimizer and parameters offloaded to CPU"),
    SmokeCheck("functools-cache", "functools_cache.py", "functools.cache exists (FastChat imports it)"),
    SmokeCheck("fsdp-save", "fsdp_save.py",
               "a tiny model under FSDP in two processes trains a step and saves a full state dict"),
    SmokeCheck("flash-attn-import", "flash_attn_import.py", "flash-attn and its compiled extension import"),
    SmokeCheck("flash-attn-fwd-bwd", "flash_attn_fwd_bwd.py",
               "flash-attn forward and backward at head_dim 128 match reference attention", gpu=True),
    SmokeCheck("gpu-arch", "gpu_arch.py", "each GPU's compute capability is one this build has kernels for",
               gpu=True),
    SmokeCheck("transformers-4bit", "transformers_4bit.py", "transformers accepts a 4-bit BitsAndBytesConfig"),
    SmokeCheck("bitsandbytes-cuda", "bitsandbytes_cuda.py",
               "bitsandbytes loads its CUDA library, not the CPU fallback; 8-bit and 4-bit ops run on a GPU"),
    SmokeCheck("lora-save", "lora_save.py",
               "a tiny LoRA trains and saves through the stack's own save path; the adapter is not empty"),
    SmokeCheck("multinode", "multinode.py",
               "sshd starts with host keys made now and accepts a key; pdsh reaches this host over ssh; "
               "the verbs and rdmacm libraries load; the NCCL defaults file is there"),
    SmokeCheck("tokenizer-special-tokens", "tokenizer_special_tokens.py",
               "a llama-style tokenizer keeps its bos/eos ids, slow and fast alike"),
    SmokeCheck("lomo-trainer", "lomo_trainer.py",
               "Trainer steps with optim=\"lomo\" on a tiny llama: the loss falls, no gradient is held at the "
               "optimizer step and no optimizer state is kept"),
    SmokeCheck("adalomo-trainer", "lomo_trainer.py",
               "Trainer steps with optim=\"adalomo\" on a tiny llama: the loss falls, no gradient is held, only "
               "factored second moments are kept", gpu=True),
)}

# Every image carries these, in this order; the rest follow in CHECKS' order.
COMMON_CHECKS = tuple(CHECKS[name] for name in ("python-version", "pins", "pip-check", "lock", "torch-compile", "shm",
                                                 "gpu-matmul", "cuda-binaries"))


def ordered(names: set[str] | frozenset[str]) -> tuple[SmokeCheck, ...]:
    """The named checks (all known) in the registry's order."""
    return tuple(check for name, check in CHECKS.items() if name in names)
