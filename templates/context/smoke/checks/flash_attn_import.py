"""flash-attn and its compiled CUDA extension import against this image's torch (no undefined symbol)."""

# smoke-runner: preload torch

import importlib

from _smoke import context, report

_, manifest = context()
version = manifest.get("pins", {}).get("flash-attn")
if version is None:
    report("skip", "flash-attn is not in this image (the {} target does not build it)".format(manifest["target"]))
# flash-attn 1.x compiles flash_attn_cuda, 2.x flash_attn_2_cuda; both need torch's libraries loaded first.
extension = "flash_attn_cuda" if version.startswith("1.") else "flash_attn_2_cuda"
try:
    import torch  # noqa: F401
    import flash_attn
    importlib.import_module(extension)
    if version.startswith("1."):
        from flash_attn.flash_attn_interface import flash_attn_unpadded_func  # noqa: F401
    else:
        from flash_attn import flash_attn_func  # noqa: F401
except Exception as exc:  # ImportError, OSError (undefined symbol), anything the import raises
    report("fail", "importing flash-attn {} ({}) fails: {}: {} (rebuild flash-attn against this torch: "
                   "pip install --no-build-isolation flash-attn=={} after torch)".format(
                       version, extension, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "", version))
report("pass", "flash-attn {} and {} import".format(flash_attn.__version__, extension))
