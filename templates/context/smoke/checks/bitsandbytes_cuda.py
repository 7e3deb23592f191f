"""bitsandbytes loads its CUDA library, not the CPU fallback; 8-bit and 4-bit ops run on a GPU.

bitsandbytes <= 0.42 looks for libcudart.so itself (CONDA_PREFIX, LD_LIBRARY_PATH, other path-like
variables, /usr/local/cuda/lib64) and, when it finds none or sees no GPU, loads
libbitsandbytes_cpu.so with only a warning; the failure surfaces later as "undefined symbol:
cget_col_row_stats" (bnb-cpu-lib). bitsandbytes >= 0.43 picks libbitsandbytes_cuda<torch's CUDA>.so
through torch (BNB_CUDA_VERSION overrides the number; 0.41 and 0.42 read it too).

On the cpu target there is nothing to check (skip). On the cuda target:
  - with a GPU: the library bitsandbytes loaded must be a CUDA one; an 8-bit Adam step must update
    the parameters like torch's Adam with 8-bit state; an 8-bit Linear8bitLt and (bitsandbytes >=
    0.39) a 4-bit NF4 Linear4bit forward must match a float reference;
  - without a GPU: bitsandbytes cannot pick its library here, so the check reports skip (never
    pass), after looking for what would make it fall back on a GPU: a CPU build of torch, no
    findable libcudart.so for bitsandbytes <= 0.42 (its own search function decides), or no
    shipped library for torch's CUDA version (>= 0.43).
"""

# smoke-runner: preload torch

import ctypes
import os
import re

from _smoke import context, finish, first_line, gpu_count, quiet_stdout

# bitsandbytes <= 0.41 prints its CUDA SETUP banner to stdout: keep stdout for the result line.
quiet_stdout()


def version_tuple(text):
    parts = []
    for part in re.split(r"[.+]", text)[:3]:
        match = re.match(r"\d+", part)
        parts.append(int(match.group()) if match else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def installed_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


def cpu_lib_fix(bnb_version):
    """How to make this bitsandbytes load its CUDA library (bnb-cpu-lib)."""
    v = version_tuple(bnb_version)
    if v < (0, 43, 0):
        override = ", and BNB_CUDA_VERSION=<torch's CUDA, e.g. 118>" if v >= (0, 41, 0) else ""
        return ("put the CUDA runtime directory (with an unversioned libcudart.so, as a CUDA -devel base has) on "
                "LD_LIBRARY_PATH, e.g. /usr/local/cuda/lib64{}; or upgrade to bitsandbytes>=0.43, which finds CUDA "
                "through torch (bnb-cpu-lib)".format(override))
    return ("install a CUDA build of torch and a bitsandbytes that ships a library for torch's CUDA version, or set "
            "BNB_CUDA_VERSION to one it ships (bnb-cpu-lib)")


def loaded_library(cextension):
    """(path of the native library bitsandbytes loaded or None, why none).

    0.37-0.42: cextension.lib is the ctypes.CDLL itself (None when loading failed).
    0.43-0.45: a BNBNativeLibrary / CudaBNBNativeLibrary wrapping it as ._lib, or None.
    0.46+:     the same, or an ErrorHandlerMockBNBNativeLibrary (no ._lib) when loading failed.
    """
    lib = getattr(cextension, "lib", None)
    if lib is None:
        return None, "bitsandbytes loaded no native library"
    if isinstance(lib, ctypes.CDLL):
        return lib._name, ""
    attrs = vars(lib) if hasattr(lib, "__dict__") else {}  # never getattr: the wrappers fake any name
    dll = attrs.get("_lib")
    if isinstance(dll, ctypes.CDLL):
        return dll._name, ""
    why = attrs.get("error_msg") or type(lib).__name__
    return None, "bitsandbytes loaded no native library ({})".format(str(why).strip().splitlines()[0][:200])


def static_problem(bnb_version, torch):
    """Without a GPU: (what would make bitsandbytes fall back to its CPU library on a GPU, or None; facts)."""
    v = version_tuple(bnb_version)
    if v < (0, 43, 0):
        try:
            from bitsandbytes.cuda_setup.main import determine_cuda_runtime_lib_path
            cudart = determine_cuda_runtime_lib_path()
        except Exception as exc:
            return None, "could not run bitsandbytes' own libcudart search ({})".format(first_line(exc))
        if cudart is None:
            return ("bitsandbytes {} finds no libcudart.so on CONDA_PREFIX, LD_LIBRARY_PATH ({}) or "
                    "/usr/local/cuda/lib64, so on a GPU it would load libbitsandbytes_cpu.so".format(
                        bnb_version, os.environ.get("LD_LIBRARY_PATH", "unset")), "")
        facts = "bitsandbytes {} would use {}".format(bnb_version, cudart)
        import bitsandbytes
        package = os.path.dirname(bitsandbytes.__file__)
        override = os.environ.get("BNB_CUDA_VERSION") if v >= (0, 41, 0) else None
        if override:
            number, source = override, "BNB_CUDA_VERSION={}".format(override)
        else:
            try:  # what bitsandbytes asks the runtime it found (works wherever a driver is present)
                runtime = ctypes.c_int()
                status = ctypes.CDLL(str(cudart)).cudaRuntimeGetVersion(ctypes.byref(runtime))
                if status != 0 or runtime.value <= 0:  # e.g. no driver on this machine
                    return None, facts + " (its version unread here: cudaRuntimeGetVersion returned {})".format(
                        status)
                number = "{}{}".format(runtime.value // 1000, (runtime.value % 1000) // 10)
                source = "the CUDA {}.{} runtime it found".format(runtime.value // 1000, (runtime.value % 1000) // 10)
            except Exception as exc:
                return None, facts + " (its version unread: {})".format(first_line(exc))
        names = ["libbitsandbytes_cuda{}.so".format(number), "libbitsandbytes_cuda{}_nocublaslt.so".format(number)]
        if not any(os.path.exists(os.path.join(package, n)) for n in names):
            return ("bitsandbytes {} ships no {} for {}, so on a GPU it would load libbitsandbytes_cpu.so".format(
                bnb_version, names[0], source), facts)
        return None, facts + ", with {}".format(names[0])
    import bitsandbytes
    cuda = torch.version.cuda
    number = os.environ.get("BNB_CUDA_VERSION") or "".join(cuda.split(".")[:2])
    name = "libbitsandbytes_cuda{}.so".format(number)
    package = os.path.dirname(bitsandbytes.__file__)
    if not any(os.path.exists(os.path.join(package, n)) for n in (name, name.replace(".so", "_nocublaslt.so"))):
        return ("bitsandbytes {} ships no {} for torch's CUDA {}{}".format(
            bnb_version, name, cuda, " (BNB_CUDA_VERSION={})".format(os.environ["BNB_CUDA_VERSION"])
            if os.environ.get("BNB_CUDA_VERSION") else ""), "")
    return None, "bitsandbytes {} ships {} for torch's CUDA {}".format(bnb_version, name, cuda)


def to_device(module, device):
    # bitsandbytes quantises Int8Params / Params4bit when they move to the GPU; old releases only
    # override Parameter.cuda(device), which Module.cuda() calls.
    return module.cuda() if device == "cuda" else module.to(device)


def cosine(a, b):
    import torch
    return torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(), dim=0).item()


def run_ops(bnb, torch, bnb_version, device="cuda"):
    """The GPU part: [what ran], or raise AssertionError/any error with what went wrong."""
    import bitsandbytes.optim as bnb_optim
    ran = []
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)

    # an 8-bit Adam step (cadam8bit_blockwise; min_8bit_size is 4096 elements, this has 8192)
    start = torch.randn(64, 128, device=device)
    grad = torch.randn(64, 128, device=device)
    param = torch.nn.Parameter(start.clone())
    ref = torch.nn.Parameter(start.clone())
    opt = bnb_optim.Adam8bit([param], lr=1e-2)
    ref_opt = torch.optim.Adam([ref], lr=1e-2)
    for _ in range(3):
        param.grad = grad.clone()
        ref.grad = grad.clone()
        opt.step()
        ref_opt.step()
    sync()
    state = opt.state[param]
    state1 = state.get("state1") if hasattr(state, "get") else None
    if state1 is None or state1.dtype != torch.uint8:
        raise AssertionError("Adam8bit kept {} state, not 8-bit".format(None if state1 is None else state1.dtype))
    moved = (param.detach() - start)
    if not torch.isfinite(param.detach()).all() or moved.abs().max().item() == 0:
        raise AssertionError("an Adam8bit step left the parameters unchanged or non-finite")
    similar = cosine(moved, ref.detach() - start)
    if similar < 0.95:
        raise AssertionError("Adam8bit's update differs from torch's Adam (cosine {:.3f})".format(similar))
    ran.append("Adam8bit step (8-bit state, cosine {:.3f} to torch Adam)".format(similar))

    # an 8-bit matmul (LLM.int8(): cget_col_row_stats and friends)
    x = torch.randn(8, 128, device=device, dtype=torch.float16)
    layer = bnb.nn.Linear8bitLt(128, 64, bias=True, has_fp16_weights=False, threshold=6.0)
    weight, bias = layer.weight.data.clone(), layer.bias.data.clone()
    layer = to_device(layer, device)
    with torch.no_grad():
        out = layer(x).float()
    sync()
    want = torch.nn.functional.linear(x.float(), weight.to(device), bias.to(device))
    error = ((out - want).norm() / want.norm()).item()
    if not torch.isfinite(out).all() or error > 0.05:
        raise AssertionError("a Linear8bitLt forward is off by {:.3f} (relative) from the float layer".format(error))
    ran.append("Linear8bitLt forward (rel. error {:.4f})".format(error))

    # a 4-bit NF4 forward (bitsandbytes >= 0.39)
    if version_tuple(bnb_version) < (0, 39, 0):
        ran.append("no Linear4bit (bitsandbytes {} predates 4-bit)".format(bnb_version))
        return ran
    layer = bnb.nn.Linear4bit(128, 64, bias=True, compute_dtype=torch.float16, quant_type="nf4")
    weight, bias = layer.weight.data.clone(), layer.bias.data.clone()
    layer = to_device(layer, device)
    if layer.weight.dtype != torch.uint8 or getattr(layer.weight, "quant_state", None) is None:
        raise AssertionError("Linear4bit did not quantise its weight on {} (dtype {})".format(device,
                                                                                             layer.weight.dtype))
    with torch.no_grad():
        out = layer(x).float()
    sync()
    want = torch.nn.functional.linear(x.float(), weight.to(device), bias.to(device))
    error = ((out - want).norm() / want.norm()).item()
    if not torch.isfinite(out).all() or error > 0.2:
        raise AssertionError("a Linear4bit (nf4) forward is off by {:.3f} (relative) from the float layer".format(
            error))
    ran.append("Linear4bit nf4 forward (rel. error {:.3f})".format(error))
    return ran


def main():
    _, manifest = context()
    if manifest.get("accelerator") != "cuda":
        finish("skip", "the {} target has no CUDA build of bitsandbytes to check".format(manifest.get("target")))
    try:
        import torch
    except Exception as exc:
        finish("fail", "import torch failed: {} (install the release's torch)".format(first_line(exc)))
    bnb_version = installed_version("bitsandbytes")
    if bnb_version is None:
        finish("fail", "bitsandbytes is not installed (install the release's bitsandbytes pin)")
    if not torch.version.cuda and not getattr(torch.version, "hip", None):
        finish("fail", "torch {} is a CPU build on the cuda target: bitsandbytes {} cannot use a GPU through it "
                       "(install torch from the release's CUDA index)".format(torch.__version__, bnb_version))
    gpus = gpu_count()

    if not gpus:
        problem, facts = static_problem(bnb_version, torch)
        if problem:
            finish("fail", "no GPU here, but {}: {}".format(problem, cpu_lib_fix(bnb_version)))
        finish("skip", "no GPU: bitsandbytes only chooses its CUDA library, and runs 8-bit/4-bit ops, on a GPU "
                       "(torch {} CUDA {}; {})".format(torch.__version__, torch.version.cuda, facts))

    try:
        import bitsandbytes as bnb
        from bitsandbytes import cextension
    except Exception as exc:
        finish("fail", "import bitsandbytes {} failed on a GPU: {} ({})".format(bnb_version, first_line(exc),
                                                                              cpu_lib_fix(bnb_version)))
    path, why = loaded_library(cextension)
    name = os.path.basename(path) if path else None
    compiled = getattr(cextension, "COMPILED_WITH_CUDA", None)
    if compiled is None:
        compiled = bool(getattr(type(getattr(cextension, "lib", None)), "compiled_with_cuda", False))
    if path is None:
        finish("fail", "bitsandbytes {} on {} GPU(s): {}: {}".format(bnb_version, gpus, why, cpu_lib_fix(bnb_version)))
    if "cpu" in name.lower() or not compiled:
        finish("fail", "bitsandbytes {} loaded {} on a machine with {} GPU(s) (torch {}, CUDA {}; "
                       "LD_LIBRARY_PATH={}): {}".format(bnb_version, name, gpus, torch.__version__, torch.version.cuda,
                                                        os.environ.get("LD_LIBRARY_PATH", "unset"),
                                                        cpu_lib_fix(bnb_version)))
    try:
        ran = run_ops(bnb, torch, bnb_version)
    except Exception as exc:
        cause = str(exc) if isinstance(exc, AssertionError) else first_line(exc)
        hint = cpu_lib_fix(bnb_version) if re.search(r"undefined symbol|not available in CPU-only|native library",
                                                     str(exc)) else \
            "pin the release's bitsandbytes for torch {} / CUDA {} and this GPU".format(torch.__version__,
                                                                                      torch.version.cuda)
        finish("fail", "bitsandbytes {} ({}) on {}: {} ({})".format(bnb_version, name, torch.cuda.get_device_name(0),
                                                                   cause, hint))
    finish("pass", "bitsandbytes {} loaded {} on {}; {}".format(bnb_version, name, torch.cuda.get_device_name(0),
                                                               "; ".join(ran)))


if __name__ == "__main__":
    main()
