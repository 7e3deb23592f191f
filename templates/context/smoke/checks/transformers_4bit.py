"""transformers accepts a 4-bit BitsAndBytesConfig (qlora's NF4 path); on a GPU a tiny llama loads in 4-bit.

qlora.py builds BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=...) and passes it to from_pretrained. A
transformers older than 4.30 has no 4-bit support: it fails on the keyword, cannot import the
class, or (4.28/4.29) silently drops the 4-bit fields and loads the model unquantised
(qlora-transformers-too-old). This check proves the config keeps its values and that
from_pretrained of a tiny saved llama takes it: where the load works here (a GPU, or a
bitsandbytes with a CPU backend) the linear layers must be Linear4bit and a forward must run and
stay close to the unquantised model. Where from_pretrained stops with transformers' own "No GPU
found. A GPU is needed for quantization." (4.30 - 4.4x without a GPU), and only then, the CPU
proves the next step instead: transformers' replace_with_bnb_linear must turn every Linear but
lm_head into an NF4, double-quantised, bf16-compute Linear4bit; the detail says the GPU part was
skipped. Any other error fails.
"""

# smoke-runner: preload torch transformers transformers.models.llama.modeling_llama bitsandbytes

import os
import re

from _smoke import context, finish, first_line, gpu_count, offline_hf, quiet_stdout

_, manifest = context()

TMP = offline_hf("smoke-4bit-")

# bitsandbytes <= 0.41 prints its CUDA SETUP banner to stdout: keep stdout for the result line.
quiet_stdout()


def pinned(name):
    wanted = manifest.get("pins", {}).get(name)
    return "{}=={}".format(name, wanted) if wanted and not wanted.startswith("git+") else None


try:
    import torch
    import transformers
except Exception as exc:
    finish("fail", "cannot import torch/transformers: {} (install the release's pins)".format(first_line(exc)))

def dist_version(name, module=None):
    version = getattr(module, "__version__", None)
    if version:
        return version
    try:
        from importlib.metadata import version as md_version
        return md_version(name)
    except Exception:
        return "?"


_pin = pinned("transformers")
if _pin and _pin != "transformers==" + transformers.__version__:
    _how = "reinstall the release's pin {} (transformers>=4.30)".format(_pin)
else:
    _how = "pin transformers>=4.30 (qlora's own final pin is transformers==4.31.0 with bitsandbytes==0.40.0)"
TOO_OLD = "transformers {} has no 4-bit loading (qlora-transformers-too-old): {}".format(transformers.__version__, _how)
WANTED = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
          "bnb_4bit_compute_dtype": torch.bfloat16}

# --- 1. the config class and its 4-bit fields -------------------------------------------------
try:
    from transformers import BitsAndBytesConfig
except Exception as exc:
    finish("fail", "from transformers import BitsAndBytesConfig failed: {}: {}".format(first_line(exc), TOO_OLD))
try:
    quant = BitsAndBytesConfig(**WANTED)
except Exception as exc:
    finish("fail", "BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', ...) raised {}: {}".format(
        first_line(exc), TOO_OLD))
wrong = ["{}={!r}".format(k, getattr(quant, k, "<missing>")) for k, v in WANTED.items()
         if getattr(quant, k, None) != v]
if wrong:
    finish("fail", "BitsAndBytesConfig dropped the 4-bit settings ({}): {}".format(", ".join(wrong), TOO_OLD))

try:
    import bitsandbytes
    bnb_version = "bitsandbytes {}".format(dist_version("bitsandbytes", bitsandbytes))
except Exception as exc:  # from_pretrained will say what it needs; name it in the detail
    bnb_version = "bitsandbytes not importable ({})".format(first_line(exc))
versions = "transformers {}, {}, torch {}".format(transformers.__version__, bnb_version,
                                                 torch.__version__.split("+")[0])

# --- 2. from_pretrained of a tiny saved llama with the config ---------------------------------
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

torch.manual_seed(0)
config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=64)
reference = LlamaForCausalLM(config)
model_dir = os.path.join(TMP, "tiny-llama")
try:
    reference.save_pretrained(model_dir)
except Exception as exc:
    finish("fail", "could not save a tiny llama: {} ({})".format(first_line(exc), versions))

# what transformers 4.30 - 4.4x raise for 4-bit loading without a GPU, and nothing else
NEEDS_GPU = re.compile(r"No GPU found\. A GPU is needed for quantization")


def layer_swap(model_dir):
    """Without a GPU: transformers' replace_with_bnb_linear, which from_pretrained runs before moving the
    weights to the GPU, must turn every Linear of the tiny llama but lm_head into a bitsandbytes Linear4bit
    with the config's NF4, double quantisation and compute dtype. Returns what it made, or fails."""
    swap = None
    for where in ("transformers.integrations.bitsandbytes", "transformers.integrations", "transformers.utils.bitsandbytes"):
        try:
            swap = getattr(__import__(where, fromlist=["replace_with_bnb_linear"]), "replace_with_bnb_linear")
            break
        except (ImportError, AttributeError):
            continue
    if swap is None:
        finish("fail", "transformers {} has no replace_with_bnb_linear: {}".format(transformers.__version__, TOO_OLD))
    model = LlamaForCausalLM(LlamaConfig.from_pretrained(model_dir))
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    try:
        model = swap(model, modules_to_not_convert=["lm_head"], quantization_config=quant)
    except Exception as exc:  # bitsandbytes < 0.39 has no Linear4bit: an AttributeError here
        finish("fail", "transformers' 4-bit layer swap (replace_with_bnb_linear) failed on the CPU: {} ({}): pin "
                       "bitsandbytes>=0.39 (4-bit) with the release's transformers".format(first_line(exc), versions))
    modules = dict(model.named_modules())
    wrong = []
    for name in linears:
        layer = modules.get(name)
        weight = getattr(layer, "weight", None)
        got = (type(layer).__name__, getattr(weight, "quant_type", None), getattr(weight, "compress_statistics", None),
               getattr(layer, "compute_dtype", None))
        if got != ("Linear4bit", "nf4", True, torch.bfloat16):
            wrong.append("{}: {}".format(name, got))
    if wrong:
        finish("fail", "transformers' 4-bit layer swap did not make NF4 double-quantised Linear4bit layers with bf16 "
                       "compute ({} of {}: {}) ({}): pin the release's transformers and bitsandbytes>=0.39".format(
                           len(wrong), len(linears), "; ".join(wrong[:3]), versions))
    return "{} Linear4bit layers (nf4, double quantisation, bf16 compute)".format(len(linears))


gpus = gpu_count()
kwargs = {"quantization_config": quant, "torch_dtype": torch.bfloat16}
if gpus:
    kwargs["device_map"] = {"": 0}
try:
    model = LlamaForCausalLM.from_pretrained(model_dir, **kwargs)
except Exception as exc:
    text = str(exc)
    if re.search(r"unexpected keyword|has no attribute|got an unexpected|load_in_4bit|bnb_4bit", text) and not \
            re.search(r"\bGPU\b|CUDA|cuda", text):
        finish("fail", "from_pretrained(quantization_config=<4-bit>) rejected it: {}: {}".format(
            first_line(exc), TOO_OLD))
    if not gpus and NEEDS_GPU.search(text):
        # transformers' own answer to 4-bit without a GPU (4.30 - 4.4x): prove on the CPU what it would do next
        swapped = layer_swap(model_dir)
        finish("pass", "BitsAndBytesConfig keeps load_in_4bit/nf4/double quant/bf16 compute; from_pretrained "
                       "reads it and stops for want of a GPU ({}); on the CPU transformers' own layer swap makes "
                       "{}; GPU part skipped: no GPU ({})".format(first_line(exc), swapped, versions))
    if gpus:
        finish("fail", "loading a tiny llama in 4-bit on the GPU failed: {} ({}): bitsandbytes must load its CUDA "
                       "library (bitsandbytes>=0.39 for 4-bit; see bnb-cpu-lib: LD_LIBRARY_PATH with "
                       "/usr/local/cuda/lib64, BNB_CUDA_VERSION, or bitsandbytes>=0.43)".format(first_line(exc),
                                                                                           versions))
    finish("fail", "from_pretrained(quantization_config=<4-bit>) failed: {} ({}): pin the release's "
                   "transformers, bitsandbytes and accelerate together".format(first_line(exc), versions))

linear4 = [n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit"]
if not linear4:
    finish("fail", "from_pretrained took the 4-bit config but loaded the model unquantised (no Linear4bit "
                   "layers): {}".format(TOO_OLD if not gpus else "{} ({})".format(
                       "pin the release's transformers and bitsandbytes>=0.39", versions)))

# --- 3. a forward in 4-bit, close to the unquantised model ------------------------------------
device = "cuda:0" if gpus else "cpu"
batch = torch.randint(0, config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
try:
    with torch.no_grad():
        got = model(input_ids=batch.to(device)).logits.float().cpu()
        want = reference.eval()(input_ids=batch).logits.float()
except Exception as exc:
    finish("fail", "a forward of the 4-bit tiny llama on {} failed: {} ({}): {}".format(
        device, first_line(exc), versions, "see bnb-cpu-lib; bitsandbytes must load its CUDA library" if gpus
        else "pin the release's bitsandbytes"))
if not torch.isfinite(got).all():
    finish("fail", "the 4-bit forward on {} gave non-finite logits ({}): pin the release's bitsandbytes".format(
        device, versions))
cosine = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0).item()
if cosine < 0.9:
    finish("fail", "the 4-bit forward on {} is far from the unquantised model (cosine {:.3f}) ({}): pin the "
                   "release's bitsandbytes".format(device, cosine, versions))
where = "on GPU 0" if gpus else "on the CPU (bitsandbytes' CPU backend)"
finish("pass", "BitsAndBytesConfig keeps its 4-bit settings; a tiny llama loaded with {} Linear4bit layers and ran "
               "a forward {} (cosine {:.3f} to the unquantised model){}; {}".format(
                   len(linear4), where, cosine, "" if gpus else "; GPU part skipped: no GPU", versions))
