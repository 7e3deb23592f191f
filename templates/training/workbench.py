"""stackbuild's training workbench: run inside an image (or on a GPU host) with its own Python.

`python workbench.py prepare DIR` writes a tiny random LLaMA-like model with its tokenizer
(DIR/model) and a few records of text (DIR/data/train.jsonl), offline, with the transformers and
tokenizers of wherever it runs, so what it writes is what that environment's training code reads.
`python workbench.py inspect SAVED DIR` reads what a training run saved in SAVED: the files, the
tensors of an adapter or of a full model, how many LoRA B tensors left zero and how many weights
moved away from DIR/model's. Both print one JSON line after the marker STACKBUILD-WORKBENCH.

It is part of stackbuild (templates/training/), sent into the container by builder/smoke/training.py
when a training entry runs; it is not in any image's build context.
"""

import glob
import json
import os
import sys

MARKER = "STACKBUILD-WORKBENCH "

# A small closed vocabulary: every record is made of these words, so a word-level tokenizer
# covers the data with no unknown token and a step over a few records means something.
VOCABULARY = (
    "alpha beta gamma delta river stone cloud green quiet bright train model layer token weight "
    "adapter shard rank step loss falls rises north south east west paper glass metal water fire "
    "light heavy small large early late open close read write learn teach count share"
).split()
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]


def _record(index):
    """A deterministic line of text: words picked by a linear walk over the vocabulary."""
    size = len(VOCABULARY)
    words = [VOCABULARY[(index * 5 + position * 11 + position * position) % size] for position in range(14)]
    return " ".join(words) + " ."


def prepare(root):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    model_dir = os.path.join(root, "model")
    data_dir = os.path.join(root, "data")
    os.makedirs(model_dir, exist_ok=True)
    os.makedirs(data_dir, exist_ok=True)

    vocab = {token: number for number, token in enumerate(SPECIAL + VOCABULARY + ["."])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    tokenizer.save_pretrained(model_dir)

    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"], pad_token_id=vocab["<pad>"],
                         tie_word_embeddings=False)
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config)
    model.save_pretrained(model_dir)

    with open(os.path.join(data_dir, "train.jsonl"), "w", encoding="utf-8") as handle:
        for index in range(32):
            handle.write(json.dumps({"text": _record(index)}) + "\n")
    return {"model": model_dir, "data": data_dir, "vocab": len(vocab),
            "parameters": sum(p.numel() for p in model.parameters()), "records": 32}


def _tensors(folder):
    """Every tensor of the weight files directly in ``folder`` (safetensors, or torch's .bin/.pt)."""
    import torch

    found = {}
    paths = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    paths += sorted(p for p in glob.glob(os.path.join(folder, "*.bin")) + glob.glob(os.path.join(folder, "*.pt"))
                    if "training_args" not in os.path.basename(p))
    for path in paths:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            loaded = load_file(path)
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(loaded, dict) and isinstance(loaded.get("module"), dict):
                loaded = loaded["module"]
        if isinstance(loaded, dict):
            found.update({name: value for name, value in loaded.items() if isinstance(value, torch.Tensor)})
    return found


def _plain_name(name):
    """A saved weight's name as the initial model names it (wrappers' prefixes dropped)."""
    for prefix in ("_fsdp_wrapped_module.", "module.", "_orig_mod."):
        name = name.replace(prefix, "")
    return name


def inspect(saved, root):
    import torch

    files = {}
    for path in sorted(glob.glob(os.path.join(saved, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            files[os.path.relpath(path, saved)] = os.path.getsize(path)
    tensors = _tensors(saved)
    initial = _tensors(os.path.join(root, "model"))
    lora = {name: value for name, value in tensors.items() if ".lora_" in name}
    lora_b = {name: value for name, value in lora.items() if ".lora_B" in name}
    shared = changed = 0
    for name, value in tensors.items():
        plain = _plain_name(name)
        if plain in initial and tuple(initial[plain].shape) == tuple(value.shape):
            shared += 1
            changed += int(not torch.equal(initial[plain].float(), value.float()))
    adapter_config = {}
    config_path = os.path.join(saved, "adapter_config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            adapter_config = json.load(handle)
    return {
        "files": files,
        "tensors": len(tensors),
        "lora_tensors": len(lora),
        "lora_b": len(lora_b),
        "lora_b_nonzero": sum(int(value.float().abs().sum().item() > 0) for value in lora_b.values()),
        "lora_dtypes": sorted({str(value.dtype).replace("torch.", "") for value in lora.values()}),
        "adapter_r": adapter_config.get("r"),
        "initial_tensors": len(initial),
        "shared": shared,
        "changed": changed,
        "meta": sum(int(value.device.type == "meta") for value in tensors.values()),
    }


def main(argv):
    if len(argv) == 2 and argv[0] == "prepare":
        result = prepare(argv[1])
    elif len(argv) == 3 and argv[0] == "inspect":
        result = inspect(argv[1], argv[2])
    else:
        print("usage: workbench.py prepare DIR | inspect SAVED DIR", file=sys.stderr)
        return 2
    print(MARKER + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
