"""Training entries: today's training code a release runs (the profile's ``training:`` list).

These check the profiles, the loader's problems, `show`, `schema`, the verdict on what a run saved
and the runner's conversation with an engine (a scripted one). The runs themselves are the
integration test tests/integration/test_training_engine.py, on every current cpu image.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

import builder.engine.connect
from builder.engine.api import ExecRun
from builder.errors import SmokeError
from builder.profile.load import available_stacks, load_stack
from builder.smoke import training as runner
from builder.smoke.training import EntryRun, run_training, verdict

GOOD = (Path(__file__).parent / "fixtures" / "good.yaml").read_text()
RELEASES = [(s, r) for s in available_stacks() for r in load_stack(s).releases]

ENTRY = """    training:
      - name: sft-lora
        summary: trl sft with a LoRA adapter
        command: trl sft --model_name_or_path {model} --dataset_name {data} --output_dir {output} --max_steps {steps}
        saves: adapter
        targets:
          cpu:
            flags: --use_cpu
          cuda:
            flags: --bf16 true
"""


def _profile(tmp_path, monkeypatch, entry: str = ENTRY, unable_training: str | None = None) -> str:
    text = GOOD.replace('    torch: "2.0.1"\n', entry + '    torch: "2.0.1"\n', 1)
    if unable_training is not None:
        text = text.replace("          instead: the cuda target, or train.py on cpu\n",
                            "          instead: the cuda target, or train.py on cpu\n"
                            f"          training: {unable_training}\n", 1)
    (tmp_path / "good.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    return "./good.yaml"


def test_the_current_qlora_release_runs_trl_sft_in_place_of_qlora_py():
    release = load_stack("qlora").release("2026.11")
    [entry] = release.training
    assert entry.name == "sft-qlora" and entry.saves == "adapter" and entry.command[:2] == ("trl", "sft")
    assert set(entry.targets) == {"cpu", "cuda"}
    assert "--load_in_4bit" in entry.targets["cuda"].flags and "--load_in_4bit" not in entry.targets["cpu"].flags
    [unable] = release.namesake.unable
    assert unable.training == "sft-qlora"


@pytest.mark.parametrize("stack", available_stacks())
def test_every_current_release_runs_todays_training_code_on_its_cpu_image(stack):
    """What CI runs (tests/integration/test_training_engine.py): each current release names an entry for cpu,
    and each of its unable namesake scripts names the entry that runs in its place."""
    release = load_stack(stack).release(None)
    assert any("cpu" in entry.targets for entry in release.training), f"{stack}@{release.name} names no training entry"
    for unable in release.namesake.unable:
        assert unable.training in {entry.name for entry in release.training}, (stack, unable.scripts)


@pytest.mark.parametrize(("stack", "release"), RELEASES, ids=[f"{s}@{r}" for s, r in RELEASES])
def test_every_training_entry_is_complete(stack, release):
    rel = load_stack(stack).releases[release]
    for entry in rel.training:
        words = " ".join(entry.command)
        for placeholder in ("{model}", "{data}", "{output}", "{steps}"):
            assert placeholder in words, (entry.name, placeholder)
        assert entry.targets and set(entry.targets) <= set(rel.targets)
        if entry.processes > 1:
            assert "{processes}" in words
    for unable in rel.namesake.unable if rel.namesake else ():
        if unable.training:
            assert unable.training in {e.name for e in rel.training}


def test_argv_fills_the_placeholders_and_adds_the_targets_flags():
    entry = load_stack("qlora").release("2026.11").training[0]
    argv = entry.argv("cpu", {"model": "/m", "data": "/d", "output": "/o", "steps": "2"})
    assert argv[:2] == ["trl", "sft"] and argv[-1] == "--use_cpu"
    assert argv[argv.index("--model_name_or_path") + 1] == "/m"
    assert argv[argv.index("--output_dir") + 1] == "/o" and argv[argv.index("--max_steps") + 1] == "2"
    assert not any("{" in word for word in argv)


def test_show_prints_the_training_entry_and_what_runs_in_the_namesakes_place(cli):
    code, out, err = cli("show", "qlora@2026.11")
    assert code == 0, err
    assert "runs in its place: training entry sft-qlora (stackbuild test --training)" in out
    assert "  training sft-qlora: TRL's trl sft fine-tunes a LoRA adapter" in out
    assert "    command: trl sft --model_name_or_path {model} --dataset_name {data}" in out
    assert "    processes: 1; saves: a PEFT adapter, LoRA B trained away from zero" in out
    assert "    cuda: --load_in_4bit --bnb_4bit_quant_type nf4" in out
    code, out, err = cli("show", "qlora@2026.11", "--json")
    [entry] = json.loads(out)["releases"][0]["training"]
    assert entry["name"] == "sft-qlora" and entry["targets"]["cpu"]["flags"] == "--use_cpu"
    assert json.loads(out)["releases"][0]["namesake"]["scripts"][0]["targets"]["cpu"]["training"] == "sft-qlora"


def test_schema_documents_the_training_fields(cli):
    code, out, _ = cli("schema")
    assert code == 0
    schema = json.loads(out)
    assert "training" in schema["$defs"]["RawRelease"]["properties"]
    assert "training" in schema["$defs"]["RawNamesakeUnable"]["properties"]
    for model in ("RawTraining", "RawTrainingTarget", "RawTrainingEvidence"):
        for name, field in schema["$defs"][model]["properties"].items():
            assert field.get("description"), f"{model}.{name} has no description"
    assert schema["$defs"]["RawTraining"]["properties"]["saves"]["enum"] == ["adapter", "full"]


def test_a_good_training_entry_loads(cli, tmp_path, monkeypatch):
    spec = _profile(tmp_path, monkeypatch, unable_training="sft-lora")
    code, out, err = cli("show", spec)
    assert code == 0, err
    assert "training sft-lora: trl sft with a LoRA adapter" in out
    assert "runs in its place: training entry sft-lora" in out


BAD = [
    ("unknown-placeholder", "--max_steps {steps}", "--max_steps {step}",
     "training[0].command: unknown placeholder '{step}' (use {model}, {data}, {output}, {steps}, {processes})"),
    ("shell-syntax", "--max_steps {steps}", "--max_steps {steps} && rm -rf /",
     "training[0].command: '&&' is not a plain argument"),
    ("quotes", "--max_steps {steps}", "--max_steps {steps} --x 'a b'",
     "training[0].command: \"'a\" is not a plain argument"),
    ("missing-output", "--output_dir {output} ", "",
     "training[0].command: the command does not use {output} (pass {output} where the program takes its output)"),
    ("processes-unsaid", "        saves: adapter\n", "        saves: adapter\n        processes: 2\n",
     "training[0].command: the entry starts 2 processes but its command does not say so (pass {processes} to the "
     "launcher, e.g. --num_processes {processes})"),
    ("processes-range", "        saves: adapter\n", "        saves: adapter\n        processes: 9\n",
     "training[0].processes: 9 processes is out of range (use 1 to 8)"),
    ("saves-unknown", "saves: adapter", "saves: weights", "training[0].saves:"),
    ("flag-syntax", "flags: --use_cpu", "flags: --use_cpu;id", "training[0].targets.cpu.flags: '--use_cpu;id' is not"),
    ("evidence-outside", "        saves: adapter\n", "        saves: adapter\n        evidence:\n          files: [../x]\n",
     "training[0].evidence.files[0]: '../x' is not a relative file pattern inside the output folder"),
    ("program-is-a-flag", "command: trl sft", "command: --trl sft", "training[0].command: '--trl' is not a program"),
    ("name", "- name: sft-lora", "- name: SFT_lora", "training[0].name: 'SFT_lora' is not an entry name"),
]


@pytest.mark.parametrize(("case", "old", "new", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_training_entry_is_refused_with_its_reason(case, old, new, message, cli, tmp_path, monkeypatch):
    assert old in ENTRY
    spec = _profile(tmp_path, monkeypatch, ENTRY.replace(old, new, 1))
    code, _, err = cli("show", spec)
    assert code == 3, err
    assert message in err, err
    assert "Traceback" not in err


def test_an_unable_script_names_a_training_entry_that_exists_and_runs_there(cli, tmp_path, monkeypatch):
    code, _, err = cli("show", _profile(tmp_path, monkeypatch, unable_training="sft-qlora"))
    assert code == 3
    assert "namesake.unable[0].training: 'sft-qlora' is not a training entry of this release (use one of: sft-lora)" in err
    only_cuda = ENTRY.replace("          cpu:\n            flags: --use_cpu\n", "")
    code, _, err = cli("show", _profile(tmp_path, monkeypatch, only_cuda, unable_training="sft-lora"))
    assert code == 3
    assert "namesake.unable[0].training: training entry 'sft-lora' does not run on cpu" in err


# ---- the verdict on what a run saved ------------------------------------------------------------------------

def _adapter(**changes) -> dict:
    saved = {"files": {"adapter_model.safetensors": 18408, "adapter_config.json": 900}, "tensors": 16,
             "lora_tensors": 16, "lora_b": 8, "lora_b_nonzero": 8, "adapter_r": 4, "initial_tensors": 21,
             "shared": 0, "changed": 0, "meta": 0}
    return {**saved, **changes}


def _full(**changes) -> dict:
    saved = {"files": {"model.safetensors": 356696, "checkpoint-2/optimizer.pt": 1000,
                       "checkpoint-2/rng_state_1.pth": 10}, "tensors": 21, "lora_tensors": 0, "lora_b": 0,
             "lora_b_nonzero": 0, "adapter_r": None, "initial_tensors": 21, "shared": 21, "changed": 21, "meta": 0}
    return {**saved, **changes}


QLORA = load_stack("qlora").release("2026.11").training[0]
# the end of sft-zero3-offload's log in the CI run where a rank aborted at exit (2026-12-07)
ABORT = ("terminate called without an active exception\n"
         "E1207 08:55:08.424000 23 torch/distributed/elastic/multiprocessing/api.py:1002] failed (exitcode: -6) "
         "local_rank: 1 (pid: 34) of binary: /opt/venv/bin/python\ntrl.scripts.sft FAILED\n")
FULL = QLORA.__class__(**{**QLORA.__dict__, "command": ("accelerate", "launch"), "saves": "full", "processes": 2,
                          "evidence": QLORA.evidence.__class__(("Detected ZeRO Offload",), ("checkpoint-*/rng_state_1.pth",))})


@pytest.mark.parametrize(("entry", "run", "status", "text"), [
    (QLORA, EntryRun(0, "done", _adapter(), 1.0), "pass", "adapter: 16 LoRA tensors (r=4), 8/8 B trained, 18408 bytes"),
    (QLORA, EntryRun(1, "x\nValueError: Your setup doesn't support bf16/gpu.\n", _adapter(), 1.0), "fail",
     "trl exited 1: ValueError: Your setup doesn't support bf16/gpu."),
    (QLORA, EntryRun(0, "", _adapter(files={"adapter_config.json": 900}), 1.0), "fail", "no adapter_model file"),
    (QLORA, EntryRun(0, "", _adapter(lora_tensors=0, lora_b=0, lora_b_nonzero=0,
                                     files={"adapter_model.safetensors": 443}), 1.0), "fail",
     "the adapter holds no LoRA tensors (443 bytes): an empty adapter"),
    (QLORA, EntryRun(0, "", _adapter(lora_b_nonzero=0), 1.0), "fail",
     "8 of 8 LoRA B tensors are still zero: the adapter was saved untrained"),
    (QLORA, EntryRun(0, "", _adapter(meta=3), 1.0), "fail", "3 saved tensors are on the meta device"),
    (FULL, EntryRun(0, "Detected ZeRO Offload and non-DeepSpeed optimizers", _full(), 1.0), "pass",
     "full model: 21 weights, 21 trained away from their initial values; 2 evidence items seen"),
    (FULL, EntryRun(0, "plain", _full(), 1.0), "fail", "the log does not show 'Detected ZeRO Offload'"),
    (FULL, EntryRun(0, "Detected ZeRO Offload", _full(files={"model.safetensors": 1}), 1.0), "fail",
     "no saved file matches checkpoint-*/rng_state_1.pth"),
    (FULL, EntryRun(0, "Detected ZeRO Offload", _full(changed=0), 1.0), "fail",
     "all 21 saved weights equal the initial ones: nothing was trained"),
    (FULL, EntryRun(0, "Detected ZeRO Offload", _full(shared=12), 1.0), "fail",
     "the saved model holds 12 of the 21 initial weights"),
    # a rank aborted at exit after a complete save (CI, sft-zero3-offload on 2026.12): a warning, not a failure
    (FULL, EntryRun(1, "Detected ZeRO Offload\nModel saved to out.\n" + ABORT, _full(), 1.0), "warn",
     "full model: 21 weights, 21 trained away from their initial values; 2 evidence items seen; then a rank "
     "aborted at exit ('terminate called without an active exception'"),
    # ... but the same abort with an incomplete save, or any other non-zero exit, fails
    (FULL, EntryRun(1, "Detected ZeRO Offload\n" + ABORT, _full(changed=0), 1.0), "fail",
     "accelerate exited 1: trl.scripts.sft FAILED"),
    (FULL, EntryRun(1, "Detected ZeRO Offload\nModel saved to out.\nRuntimeError: boom\n", _full(), 1.0), "fail",
     "accelerate exited 1: RuntimeError: boom"),
], ids=["adapter", "exit", "no-adapter-file", "empty-adapter", "untrained-b", "meta", "full", "no-log-evidence",
        "no-file-evidence", "untrained-full", "partial-full", "teardown-abort", "abort-unsaved", "other-exit"])
def test_the_verdict_names_what_was_saved_or_what_is_missing(entry, run, status, text):
    got, detail = verdict(entry, "cpu", run)
    assert got == status, detail
    assert text in detail, detail


# ---- the runner and an engine -------------------------------------------------------------------------------

class ScriptedEngine:
    """Answers the runner's execs: the workbench write, prepare, each entry's command and inspect."""

    def __init__(self, saved: dict, entry_code: int = 0, labels: dict | None = None):
        self.saved, self.entry_code = saved, entry_code
        self.started: list[dict] = []
        self.execs: list[list[str]] = []
        self.removed: list[str] = []
        self.written: dict[str, bytes] = {}
        self.image_labels = labels or {}

    # images (for the CLI's lookup of an image given by name)
    def image(self, ref):
        return {"Id": "sha256:" + "1" * 64} if ref.startswith("stackbuild/") else None

    def labels(self, ref):
        return dict(self.image_labels)

    def containers(self, label):
        return []

    def start_container(self, image, name, labels, gpus, shm_size=None, **kwargs):
        self.started.append({"image": image, "name": name, "labels": labels, "gpus": gpus, **kwargs})
        return name

    def remove_container(self, container):
        self.removed.append(container)

    def exec_stream(self, container, command, workdir=None):
        self.execs.append(command)
        if command[:2] == ["python", "-c"]:
            self.written[command[3]] = base64.b64decode(command[4])
            out, code = b"", 0
        elif command[1:3] == [runner.WORKBENCH, "prepare"]:
            out, code = (runner.MARKER + json.dumps({"model": "/t/model", "data": "/t/data"}) + "\n").encode(), 0
        elif command[1:3] == [runner.WORKBENCH, "inspect"]:
            out, code = (runner.MARKER + json.dumps(self.saved) + "\n").encode(), 0
        else:
            out, code = b"{'loss': '3.9'}\nTraining completed.\n", self.entry_code
        return ExecRun(iter([(out, None)]), lambda: code, lambda: True)


def test_the_runner_makes_the_model_in_an_offline_container_runs_the_entry_and_reads_what_it_saved():
    engine = ScriptedEngine(_adapter())
    release = load_stack("qlora").release("2026.11")
    report, logs = run_training(engine, "stackbuild/qlora:x", release, "cpu")
    assert [(r.check, r.status) for r in report.results] == [("sft-qlora", "pass")], report.results
    [started] = engine.started
    assert started["network"] == "none" and started["gpus"] is None
    assert started["env"]["HF_HUB_OFFLINE"] == "1" and started["env"]["HF_DATASETS_OFFLINE"] == "1"
    assert engine.written[runner.WORKBENCH] == runner.workbench_source()
    argv = engine.execs[2]
    assert argv[:2] == ["trl", "sft"] and argv[-1] == "--use_cpu" and "/t/model" in argv and "/t/data" in argv
    assert argv[argv.index("--output_dir") + 1] == f"{runner.ROOT}/out/sft-qlora"
    assert engine.execs[3] == ["python", runner.WORKBENCH, "inspect", f"{runner.ROOT}/out/sft-qlora", runner.ROOT]
    assert engine.removed == [started["name"]]
    assert "Training completed." in logs["sft-qlora"]


def test_a_failed_entry_fails_and_the_container_still_goes():
    engine = ScriptedEngine(_adapter(), entry_code=1)
    report, _ = run_training(engine, "stackbuild/qlora:x", load_stack("qlora").release("2026.11"), "cpu")
    assert [r.status for r in report.results] == ["fail"] and not report.ok
    assert engine.removed


def test_a_gpu_variant_without_a_gpu_is_skipped_never_passed():
    engine = ScriptedEngine(_adapter())
    report, _ = run_training(engine, "stackbuild/qlora:x", load_stack("qlora").release("2026.11"), "cuda")
    assert [(r.status, r.detail) for r in report.results] == [("skip", "the cuda variant needs a GPU: run with "
                                                                       "--gpus all")]
    assert not engine.started


def test_an_unknown_entry_is_an_error_naming_the_entries():
    with pytest.raises(SmokeError, match="has no training entry 'nope'; entries: sft-qlora"):
        run_training(ScriptedEngine(_adapter()), "x", load_stack("qlora").release("2026.11"), "cpu", only=["nope"])


def test_cli_test_training_runs_the_entries_of_the_release_an_images_labels_name(cli, monkeypatch):
    labels = {"io.stackbuild.stack": "qlora", "io.stackbuild.release": "2026.11", "io.stackbuild.target": "cpu"}
    engine = ScriptedEngine(_adapter(), labels=labels)
    monkeypatch.setattr(builder.engine.connect, "connect", lambda *a, **k: engine)
    code, out, err = cli("test", "stackbuild/qlora:2026.11-cpu", "--training")
    assert code == 0, err
    assert "training entries of 2026.11 (cpu) in stackbuild/qlora:2026.11-cpu" in out
    assert "PASS  sft-qlora" in out and "8/8 B trained" in out
    engine.saved = _adapter(lora_b_nonzero=0)
    code, out, err = cli("test", "stackbuild/qlora:2026.11-cpu", "--training")
    assert code == 9
    assert "1 of 1 training entries failed in stackbuild/qlora:2026.11-cpu: sft-qlora" in err
    assert "sft-qlora: the whole log is" in err


# What DeepSpeed 0.19.8 saved for sft-zero3-offload's cuda variant (--bf16 true) on an H100, one process
# (bench/results/training-gpu-2026-12-07.md): a bf16 run's ZeRO-3 optimizer shards are named bf16_zero_pp_rank_N_...
H100_SAVED = ["README.md", "checkpoint-2/config.json", "checkpoint-2/generation_config.json",
              "checkpoint-2/global_step2/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
              "checkpoint-2/global_step2/zero_pp_rank_0_mp_rank_00_model_states.pt", "checkpoint-2/latest",
              "checkpoint-2/model.safetensors", "checkpoint-2/rng_state.pth"]


def _bench():
    import importlib.util
    import sys

    path = Path(__file__).parents[2] / "bench" / "training_gpu.py"
    spec = importlib.util.spec_from_file_location("training_gpu_bench", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["training_gpu_bench"] = bench
    spec.loader.exec_module(bench)
    return bench


def test_the_zero3_entrys_cuda_evidence_names_the_files_a_bf16_run_saves():
    bench = _bench()
    entry = load_stack("deepspeed-zero3-offload").release("2026.12").training[0]
    saved = _full(files={name: 10 for name in H100_SAVED})
    run = EntryRun(0, "Detected ZeRO Offload and non-DeepSpeed optimizers", saved, 41.6)
    # the H100 run had one process: the bench's evidence names rank 0 where the entry names rank 1
    one = bench.fewer_ranks(entry, 1)
    assert one.evidence_for("cuda").files == ("checkpoint-*/global_step*/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",)
    assert verdict(one, "cuda", run)[0] == "pass"
    # the cpu variant's name (fp32 shards) is not what a bf16 run writes
    assert verdict(one, "cpu", run) == ("fail", "no saved file matches "
                                        "checkpoint-*/global_step*/zero_pp_rank_0_mp_rank_00_optim_states.pt "
                                        f"(saved: {', '.join(sorted(H100_SAVED))})")
    # with two GPUs the image's own entry asks for rank 1's bf16 shard
    two = _full(files={name.replace("pp_rank_0", "pp_rank_1"): 10 for name in H100_SAVED} | {n: 10 for n in H100_SAVED})
    assert verdict(entry, "cuda", EntryRun(0, "Detected ZeRO Offload", two, 1.0))[0] == "pass"


# what the flash-attn-fsdp@2026.12 sft-fsdp entry saved in one process on an H100 (2026-12-07)
FSDP_ONE_PROCESS_SAVED = ["README.md", "checkpoint-2/config.json", "checkpoint-2/generation_config.json",
                          "checkpoint-2/model.safetensors", "checkpoint-2/optimizer.bin",
                          "checkpoint-2/pytorch_model_fsdp.bin", "checkpoint-2/rng_state.pth", "checkpoint-2/scheduler.pt"]


def test_one_process_saves_its_rng_state_without_a_rank():
    """The Trainer names a rank's RNG state rng_state_N.pth only when there are several; the bench's one-GPU
    run of the FSDP entry saved rng_state.pth and was judged a failure before (no rng_state_0.pth)."""
    bench = _bench()
    entry = load_stack("flash-attn-fsdp").release("2026.12").training[0]
    run = EntryRun(0, "", _full(files={name: 10 for name in FSDP_ONE_PROCESS_SAVED}), 26.7)
    assert "checkpoint-*/rng_state_1.pth" in entry.evidence_for("cuda").files
    one = bench.fewer_ranks(entry, 1)
    assert "checkpoint-*/rng_state.pth" in one.evidence_for("cuda").files
    assert verdict(one, "cuda", run)[0] == "pass"
    assert "checkpoint-*/rng_state_1.pth" in bench.fewer_ranks(entry, 2).evidence_for("cuda").files


def test_the_bench_points_the_images_file_paths_at_copies_on_the_host(tmp_path):
    """The zero3 entry names /opt/stackbuild/files/ds_config_zero3_offload.json, which only the image has."""
    bench = _bench()
    stack = load_stack("deepspeed-zero3-offload")
    entry = stack.release("2026.12").training[0]
    argv = entry.argv("cuda", {"model": "m", "data": "d", "output": "o", "steps": "2"})
    assert "/opt/stackbuild/files/ds_config_zero3_offload.json" in argv
    host = bench.on_host(argv, stack, str(tmp_path))
    config = tmp_path / "files" / "ds_config_zero3_offload.json"
    assert str(config) in host and not any("/opt/stackbuild" in word for word in host)
    assert json.loads(config.read_text())["zero_optimization"]["stage"] == 3
