"""LOMO / AdaLomo through transformers' Trainer: steps are taken, the loss falls, nothing is held.

The lomo option installs lomo-optim, which the Trainer imports for optim="lomo" and "adalomo"
(lomo-optim-missing). Both fuse the update into the backward pass: a hook applies each gradient
and frees it, so at the point where the Trainer would clip and step no parameter holds a gradient,
and LOMO keeps no optimizer state at all (AdaLomo keeps Adafactor-style factored second moments,
one row and one column vector per matrix). This check trains a tiny random LlamaForCausalLM for a
few Trainer steps on one fixed batch and proves, at every step's on_pre_optimizer_step:

  - no parameter holds a gradient (what the option's advisories lomo-grad-accum and
    lomo-grad-clip rest on: nothing is left to accumulate or to clip),
  - the optimizer's own state is empty (LOMO), or only factored moments far smaller than the
    model (AdaLomo),

and at the end that the weights changed and the loss fell.

Check "lomo-trainer" runs optim="lomo" on whatever device the Trainer picks (the CPU here).
Check "adalomo-trainer" runs optim="adalomo", which needs a GPU: lomo-optim 0.1.1 allocates
AdaLomo's moments with .cuda() (adalomo-cuda-only), so without one it skips.
"""

# smoke-runner: preload torch transformers transformers.models.llama.modeling_llama

from _smoke import context, finish, first_line, gpu_count, offline_hf, quiet_stdout

check, manifest = context()
OPTIM = {"lomo-trainer": "lomo", "adalomo-trainer": "adalomo"}.get(check.get("name"))
if OPTIM is None:
    finish("fail", "lomo_trainer.py runs as lomo-trainer or adalomo-trainer, not {!r}".format(check.get("name")))
if OPTIM == "adalomo" and gpu_count() == 0:
    finish("skip", "no GPU visible: lomo-optim 0.1.1 keeps AdaLomo's moments on CUDA (.cuda()), so it needs a GPU "
                   "(run with --gpus all on a GPU host)")

TMP = offline_hf("smoke-lomo-")
quiet_stdout()
pin = (manifest.get("pins") or {}).get("lomo-optim")
install = "pip install lomo-optim=={}".format(pin) if pin else "build the image with --with lomo"

try:
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments
except Exception as exc:
    finish("fail", "cannot import torch/transformers: {} (install the release's pins)".format(first_line(exc)))

versions = "transformers {}, torch {}".format(transformers.__version__, torch.__version__.split("+")[0])
STEPS, BATCH, LENGTH = 4, 4, 16


class Batch(torch.utils.data.Dataset):
    """One fixed batch, so four steps of plain SGD visibly lower its loss."""

    def __init__(self, vocab):
        self.ids = torch.randint(0, vocab, (BATCH, LENGTH), generator=torch.Generator().manual_seed(1))

    def __len__(self):
        return BATCH

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


class Watch(TrainerCallback):
    """What is held where the Trainer would clip and step: parameters with a gradient, optimizer state."""

    def __init__(self):
        self.seen = []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        inner = getattr(optimizer, "optimizer", optimizer)
        with_grad = [n for n, p in model.named_parameters() if p.grad is not None]
        self.seen.append((with_grad, held_state(inner)))


def held_state(optimizer):
    """(tensors, elements) the optimizer keeps: torch's per-parameter state and AdaLomo's moment dicts."""
    tensors = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    for name in ("exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col"):
        tensors += [t for t in (getattr(optimizer, name, None) or {}).values() if torch.is_tensor(t)]
    return len(tensors), sum(t.numel() for t in tensors)


try:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    numel = sum(p.numel() for p in before.values())
    args = TrainingArguments(output_dir=TMP, optim=OPTIM, learning_rate=0.05 if OPTIM == "lomo" else 0.01,
                             lr_scheduler_type="constant", max_steps=STEPS, per_device_train_batch_size=BATCH,
                             logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
                             dataloader_num_workers=0)
    watch = Watch()
    trainer = Trainer(model=model, args=args, train_dataset=Batch(config.vocab_size), callbacks=[watch])
except Exception as exc:
    finish("fail", "the Trainer with optim={!r} could not be set up: {} ({})".format(OPTIM, first_line(exc), versions))

try:
    trainer.train()
except Exception as exc:
    text = first_line(exc)
    if "lomo_optim" in text or "lomo-optim" in text:
        finish("fail", "optim={!r} needs lomo-optim, which is missing: {} ({}; lomo-optim-missing)".format(
            OPTIM, text, install))
    finish("fail", "Trainer steps with optim={!r} failed: {} ({})".format(OPTIM, text, versions))

optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
kind = type(optimizer).__name__
expected = {"lomo": "Lomo", "adalomo": "AdaLomo"}[OPTIM]
if kind != expected:
    finish("fail", "optim={!r} gave the Trainer a {} optimizer, not lomo_optim's {} ({})".format(
        OPTIM, kind, expected, versions))
losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
if trainer.state.global_step != STEPS or len(watch.seen) != STEPS:
    finish("fail", "the Trainer took {} of {} steps ({} reached the optimizer step) with {} ({})".format(
        trainer.state.global_step, STEPS, len(watch.seen), kind, versions))

held = [(step, names) for step, (names, _) in enumerate(watch.seen, 1) if names]
if held:
    step, names = held[0]
    finish("fail", "{} left a gradient on {} of {} parameters at step {} ({}, ...): gradients are kept, not applied "
                   "and freed inside backward, so the memory saving is gone ({}; reinstall the release's "
                   "lomo-optim)".format(kind, len(names), len(before), step, names[0], versions))
states = [s for _, s in watch.seen]
tensors, elements = max(states, key=lambda s: s[1])
if OPTIM == "lomo" and tensors:
    finish("fail", "Lomo keeps optimizer state ({} tensors, {} elements); it should keep none ({})".format(
        tensors, elements, versions))
if OPTIM == "adalomo" and (not tensors or elements * 4 > numel):
    finish("fail", "AdaLomo keeps {} state tensors of {} elements for a {}-element model; its factored second "
                   "moments should be far smaller than the model ({})".format(tensors, elements, numel, versions))

changed = sum(1 for n, p in model.named_parameters() if not torch.equal(p.detach().cpu(), before[n].cpu()))
if changed == 0:
    finish("fail", "{} took {} steps but no weight changed ({})".format(kind, STEPS, versions))
if len(losses) < 2 or not losses[-1] < losses[0]:
    finish("fail", "{}'s loss did not fall over {} steps on one batch: {} ({})".format(
        kind, STEPS, ", ".join("{:.3f}".format(x) for x in losses), versions))
finish("pass", "{} Trainer steps with {} on {}: loss {:.3f} -> {:.3f}, {} of {} tensors changed, no gradient held at any "
               "optimizer step, optimizer state {} ({})".format(
                   STEPS, kind, str(trainer.args.device), losses[0], losses[-1], changed, len(before),
                   "none" if not tensors else "{} elements for {} parameters".format(elements, numel), versions))
