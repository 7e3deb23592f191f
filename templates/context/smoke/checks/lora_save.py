"""A tiny LoRA trains and saves through the stack's own save path; the adapter is not empty.

alpaca-lora's finetune.py (and qlora.py before its PR 44) replace model.state_dict with a lambda
that already calls get_peft_model_state_dict before model.save_pretrained; with peft 0.3.0 to 0.19
that writes an adapter with no tensors (peft-empty-adapter). This check trains a tiny random
LlamaForCausalLM with a LoRA on q_proj/v_proj for a few steps, saves it the way the stack's
script does, and proves the file holds every lora_A/lora_B tensor, non-zero lora_B, and reloads
onto a fresh base model to the same logits.

The save path follows manifest["stack"] ("alpaca-lora": the state_dict override; anything else:
plain save_pretrained, as qlora.py after PR 44); a check entry may set "save_path" to
"state-dict-override" or "save-pretrained" to choose it explicitly.
"""

# smoke-runner: preload torch transformers transformers.models.llama.modeling_llama bitsandbytes peft (peft imports bitsandbytes where it is installed)

import os

from _smoke import context, finish, first_line, offline_hf, quiet_stdout

check, manifest = context()

# Offline, with every cache in a temporary folder removed at exit.
TMP = offline_hf("smoke-lora-")

# Libraries print banners on import (bitsandbytes 0.37 to stdout): keep stdout for the result line.
quiet_stdout()

OVERRIDE = "state-dict-override"
PLAIN = "save-pretrained"
stack = manifest.get("stack", "")
save_path = check.get("save_path") or (OVERRIDE if stack == "alpaca-lora" else PLAIN)
if save_path not in (OVERRIDE, PLAIN):
    finish("fail", "unknown save_path {!r} in the check entry (use {!r} or {!r})".format(save_path, OVERRIDE, PLAIN))
script = {"alpaca-lora": "finetune.py", "qlora": "qlora.py"}.get(stack, "the training script")
how = ("{}'s model.state_dict override + save_pretrained".format(script) if save_path == OVERRIDE
       else "plain save_pretrained")

try:
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    import peft
    from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
except Exception as exc:
    finish("fail", "cannot import torch/transformers/peft: {} (install the release's pins)".format(first_line(exc)))

versions = "peft {}, transformers {}, torch {}".format(peft.__version__, transformers.__version__,
                                                      torch.__version__.split("+")[0])
LAYERS, MODULES = 2, ("q_proj", "v_proj")

# --- a tiny random llama with a LoRA, trained a few steps ----------------------------------------
try:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                         num_attention_heads=4, max_position_embeddings=64)
    base = LlamaForCausalLM(config)
    base_weights = {k: v.detach().clone() for k, v in base.state_dict().items()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=list(MODULES), lora_dropout=0.0, bias="none",
                      task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    model.config.use_cache = False
    if save_path == OVERRIDE:
        # tloen/alpaca-lora finetune.py, verbatim apart from line breaks
        old_state_dict = model.state_dict
        model.state_dict = (lambda self, *_, **__: get_peft_model_state_dict(self, old_state_dict())).__get__(
            model, type(model))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    batch = torch.randint(0, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    model.train()
    for _ in range(4):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        trained_logits = model(input_ids=batch).logits.float()
except Exception as exc:
    finish("fail", "a tiny LoRA did not train ({}): {} (install the release's peft/transformers pins)".format(
        versions, first_line(exc)))

# --- save as the stack's script does, then read the file back ------------------------------------
out = os.path.join(TMP, "adapter")
try:
    model.save_pretrained(out)
except Exception as exc:
    finish("fail", "save_pretrained through {} raised {} ({})".format(how, first_line(exc), versions))

files = [n for n in ("adapter_model.safetensors", "adapter_model.bin") if os.path.exists(os.path.join(out, n))]
if not files:
    finish("fail", "save_pretrained ({}) wrote no adapter_model file, only {} ({}): pin the release's peft".format(
        how, sorted(os.listdir(out)), versions))
name = files[0]
path = os.path.join(out, name)
size = os.path.getsize(path)
try:
    if name.endswith(".safetensors"):
        from safetensors.torch import load_file
        saved = load_file(path)
    else:
        saved = torch.load(path, map_location="cpu")
except Exception as exc:
    finish("fail", "{} ({} bytes) does not load: {} ({})".format(name, size, first_line(exc), versions))

if save_path == OVERRIDE:
    fix = ("pin peft==0.2.0 (or peft>=0.20) or delete the old_state_dict/model.state_dict override from "
           "{}{}".format(script, " (qlora did in PR 44)" if stack == "qlora" else ""))
else:
    fix = "pin the release's peft and save with plain model.save_pretrained (no model.state_dict override)"
if not saved:
    finish("fail", "{} has 0 tensors ({} bytes) after {}: the empty-adapter bug (peft-empty-adapter) with {}: "
                   "{}".format(name, size, how, versions, fix))

missing, zero_b = [], []
for layer in range(LAYERS):
    for module in MODULES:
        for part in ("lora_A", "lora_B"):
            needle = "layers.{}.self_attn.{}.{}".format(layer, module, part)
            keys = [k for k in saved if needle in k]
            if not keys:
                missing.append(needle)
            elif part == "lora_B" and not any(saved[k].float().abs().sum().item() > 0 for k in keys):
                zero_b.append(needle)
if missing:
    finish("fail", "{} ({} tensors, {} bytes) lacks {} of the 8 LoRA tensors ({}) after {} with {}: the "
                   "empty-adapter bug (peft-empty-adapter): {}".format(
                       name, len(saved), size, len(missing), ", ".join(missing[:3]), how, versions, fix))
if zero_b:
    finish("fail", "{}: lora_B is all zeros in {} after training ({}, {}): the saved adapter is a no-op; pin "
                   "the release's peft".format(name, ", ".join(zero_b[:3]), how, versions))
tensor_bytes = sum(t.numel() * t.element_size() for t in saved.values())
if size < tensor_bytes:
    finish("fail", "{} is {} bytes, smaller than its tensors' {} bytes: a truncated adapter ({}); pin the "
                   "release's peft".format(name, size, tensor_bytes, versions))

# --- a fresh base model + the saved adapter gives the trained model's logits ---------------------
try:
    fresh = LlamaForCausalLM(config)
    fresh.load_state_dict(base_weights)
    reloaded = PeftModel.from_pretrained(fresh, out)
    reloaded.eval()
    with torch.no_grad():
        reloaded_logits = reloaded(input_ids=batch).logits.float()
except Exception as exc:
    finish("fail", "PeftModel.from_pretrained of the saved adapter failed: {} ({}); pin the release's "
                   "peft".format(first_line(exc), versions))
diff = (reloaded_logits - trained_logits).abs().max().item()
if diff > 1e-4:
    finish("fail", "the reloaded adapter's logits differ from the trained model's by {:.2e} ({}, {}): the saved "
                   "adapter is incomplete (peft-empty-adapter); {}".format(diff, how, versions, fix))
finish("pass", "{} LoRA tensors ({} bytes in {}) saved through {}, non-zero lora_B, reload matches "
               "(max |dlogits| {:.1e}); {}".format(len(saved), size, name, how, diff, versions))
