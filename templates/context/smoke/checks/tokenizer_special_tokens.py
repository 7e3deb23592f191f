"""A llama-style tokenizer keeps its bos/eos ids, slow and fast alike.

alpaca-lora and qlora load their base model's tokenizer.model through LlamaTokenizer (slow,
sentencepiece) or AutoTokenizer (fast, converted from the slow one when the model has no
tokenizer.json). The decapoda-research conversion shipped wrong bos/eos ids, so training data got
the wrong EOS and the model never learned to stop (llama-decapoda-tokenizer). This check trains a
tiny sentencepiece BPE model (unk=0, bos=1, eos=2) and proves that LlamaTokenizer, the fast
tokenizer converted from it, and that fast tokenizer saved and reloaded through AutoTokenizer
all keep unk/bos/eos at 0/1/2, encode "hello world" as sentencepiece does with bos first, and
decode it back. (`stackbuild doctor --model` checks a real model directory's tokenizer files.)
"""

# smoke-runner: preload transformers

import json
import os
import shutil

from _smoke import context, finish, first_line, offline_hf, quiet_stdout

_, manifest = context()

TMP = offline_hf("smoke-tok-")

# sentencepiece's trainer and some libraries write to fd 1: keep stdout for the result line.
quiet_stdout()


def pin(name, fallback):
    wanted = manifest.get("pins", {}).get(name)
    return "{}=={}".format(name, wanted) if wanted and not wanted.startswith("git+") else fallback


SP_FIX = "install sentencepiece ({}); LlamaTokenizer cannot read a llama tokenizer.model without it".format(
    pin("sentencepiece", "pip install sentencepiece"))
TEXT = "hello world"
CORPUS = [
    "hello world, this is a tiny corpus for a tiny tokenizer.",
    "the quick brown fox jumps over the lazy dog.",
    "a llama eats grass and hello to the world of words.",
    "we train low rank adapters on instructions and responses.",
    "below is an instruction that describes a task. write a response.",
    "tokens begin with a bos token and end with an eos token.",
] * 4

try:
    import sentencepiece as spm
except Exception as exc:
    finish("fail", "import sentencepiece failed ({}): {}".format(first_line(exc), SP_FIX))

# --- the reference: a tiny sentencepiece BPE model with llama's special ids -----------------------
corpus = os.path.join(TMP, "corpus.txt")
with open(corpus, "w", encoding="utf-8") as handle:
    handle.write("\n".join(CORPUS) + "\n")
tokdir = os.path.join(TMP, "tokenizer")
os.makedirs(tokdir)
model_file = os.path.join(tokdir, "tokenizer.model")
try:
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(TMP, "sp"), vocab_size=64, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, hard_vocab_limit=False,
        minloglevel=2)
    shutil.copy(os.path.join(TMP, "sp.model"), model_file)
    sp = spm.SentencePieceProcessor()
    sp.Load(model_file)
except Exception as exc:
    finish("fail", "sentencepiece {} could not train or load a tiny model: {} ({})".format(
        getattr(spm, "__version__", "?"), first_line(exc), SP_FIX))
if (sp.unk_id(), sp.bos_id(), sp.eos_id()) != (0, 1, 2):
    finish("fail", "sentencepiece {} trained unk/bos/eos as {}/{}/{}, asked for 0/1/2 (pin the release's "
                   "sentencepiece)".format(getattr(spm, "__version__", "?"), sp.unk_id(), sp.bos_id(), sp.eos_id()))
expected = [1] + list(sp.EncodeAsIds(TEXT))
with open(os.path.join(tokdir, "tokenizer_config.json"), "w", encoding="utf-8") as handle:
    json.dump({"tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>", "bos_token": "<s>",
               "eos_token": "</s>", "add_bos_token": True, "add_eos_token": False}, handle)

try:
    import transformers
    from transformers import AutoTokenizer, LlamaTokenizer
except Exception as exc:
    finish("fail", "cannot import LlamaTokenizer from transformers: {} (install the release's transformers "
                   "and sentencepiece pins)".format(first_line(exc)))


def protobuf_version():
    try:
        import google.protobuf
        return google.protobuf.__version__
    except Exception:
        return None


def protobuf_fix():
    """The fix when protobuf is missing: transformers reads tokenizer.model's protobuf to convert it."""
    try:
        major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    except ValueError:
        major, minor = 99, 0
    which = "protobuf==3.20.2, transformers {}'s own cap".format(transformers.__version__) if (major, minor) < (
        4, 31) else "a protobuf of transformers {}'s time".format(transformers.__version__)
    return ("protobuf is not installed: add it to the release's packages ({}); transformers needs it to turn a "
            "llama tokenizer.model without tokenizer.json into a fast tokenizer".format(which))


def fix_for(exc):
    if protobuf_version() is None and ("protobuf" in str(exc).lower() or "tiktoken" in str(exc).lower()
                                       or int(transformers.__version__.split(".")[0]) >= 5):
        return protobuf_fix()
    return SP_FIX + "; pin the release's transformers and tokenizers"


versions = "transformers {}, sentencepiece {}".format(transformers.__version__, getattr(spm, "__version__", "?"))
tokenizers_version = None
try:
    import tokenizers
    tokenizers_version = tokenizers.__version__
except Exception:
    pass
if tokenizers_version:
    versions += ", tokenizers {}".format(tokenizers_version)
versions += ", protobuf {}".format(protobuf_version()) if protobuf_version() else ", no protobuf"


def problems_of(label, tok):
    """What is wrong with one tokenizer, as short phrases."""
    found = []
    ids = (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id)
    if ids != (0, 1, 2):
        found.append("{} has unk/bos/eos ids {}/{}/{}, not 0/1/2".format(label, *ids))
    got = list(tok(TEXT)["input_ids"])
    if got != expected:
        found.append("{} encodes {!r} as {}, sentencepiece as {}".format(label, TEXT, got, expected))
    elif got[:1] != [1]:
        found.append("{} does not start {!r} with bos".format(label, TEXT))
    back = tok.decode(got, skip_special_tokens=True)
    if back.strip() != TEXT:
        found.append("{} decodes {} to {!r}".format(label, got, back))
    return found


problems = []
loaded = []
# 1. LlamaTokenizer on the tokenizer.model, as finetune.py loads it (slow, sentencepiece; on
#    transformers 5 the one class converts from sentencepiece itself)
try:
    slow = LlamaTokenizer.from_pretrained(tokdir)
    loaded.append(type(slow).__name__)
    problems += problems_of("LlamaTokenizer", slow)
except Exception as exc:
    finish("fail", "LlamaTokenizer.from_pretrained of a llama tokenizer.model failed: {} ({}): {}".format(
        first_line(exc), versions, fix_for(exc)))

# 2. the fast tokenizer converted from tokenizer.model (what AutoTokenizer does for a model without
#    tokenizer.json), then saved and reloaded from its tokenizer.json
fastdir = os.path.join(TMP, "fast")
try:
    fast = AutoTokenizer.from_pretrained(tokdir, use_fast=True)
except Exception as exc:
    finish("fail", "converting the llama tokenizer.model to a fast tokenizer failed: {} ({}): {}".format(
        first_line(exc), versions, fix_for(exc)))
if not getattr(fast, "is_fast", False):
    problems.append("AutoTokenizer(use_fast=True) gave the slow {} (install tokenizers)".format(type(fast).__name__))
else:
    loaded.append(type(fast).__name__)
    problems += problems_of("the converted fast tokenizer", fast)
    try:
        fast.save_pretrained(fastdir)
        if not os.path.exists(os.path.join(fastdir, "tokenizer.json")):
            problems.append("the fast tokenizer's save_pretrained wrote no tokenizer.json")
        else:
            if os.path.exists(os.path.join(fastdir, "tokenizer.model")):  # reload from tokenizer.json alone
                os.remove(os.path.join(fastdir, "tokenizer.model"))
            again = AutoTokenizer.from_pretrained(fastdir)
            loaded.append(type(again).__name__ + " (tokenizer.json)")
            problems += problems_of("the fast tokenizer reloaded from tokenizer.json", again)
    except Exception as exc:
        problems.append("saving and reloading the fast tokenizer failed: {}".format(first_line(exc)))

if problems:
    finish("fail", "; ".join(problems[:4]) + " ({}): pin the release's transformers, tokenizers and "
                   "sentencepiece together".format(versions))
finish("pass", "{} keep unk/bos/eos = 0/1/2, encode {!r} as sentencepiece does ({}) with bos first and decode "
               "it back; {}".format(", ".join(loaded), TEXT, expected, versions))
