"""`stackbuild doctor` through the CLI, and the diagnosis a failed build or smoke test carries."""

from __future__ import annotations

import json
from pathlib import Path

import builder.doctor.diagnose
import builder.engine.connect
from builder.doctor.diagnose import EngineInfo


LOGS = Path(__file__).parent / "fixtures" / "logs"


def test_doctor_names_issue_line_and_era_fix(cli):
    log = LOGS / "ds-aio-precompile--1.log"
    code, out, err = cli("doctor", str(log), "--stack", "deepspeed-zero3-offload@2023.06")
    assert code == 0, err
    assert out.startswith("ds-aio-precompile (")
    assert "  >" in out and "Unable to pre-compile async_io" in out
    code, out, _ = cli("doctor", str(log), "--stack", "deepspeed-zero3-offload@2023.06", "--json")
    first = json.loads(out)["diagnoses"][0]
    assert first["id"] == "ds-aio-precompile" and "deepspeed==0.9.3" in first["fix"]


def test_clean_log_and_stdin(cli, tmp_path):
    clean = next((LOGS / "clean").glob("*.log"))
    code, out, _ = cli("doctor", str(clean))
    assert code == 0 and out == f"no known failure recognised in {clean}\n"


def test_doctor_input_errors(cli, tmp_path):
    assert cli("doctor") == (11, "", "error: give a LOG file (or - for stdin), --host, or --model DIR\n")
    code, _, err = cli("doctor", str(tmp_path / "missing.log"))
    assert code == 11 and err.startswith(f"error: log file not found: {tmp_path / 'missing.log'}")
    assert cli("doctor", "x.log", "--stack", "nope")[0] == 4


def test_doctor_host_json_with_injected_probes(cli, monkeypatch):
    monkeypatch.setattr(builder.engine.connect, "host_info",
                        lambda: vars(EngineInfo("20.10.24", "unix:///var/run/docker.sock", ("runc",), "/")))

    def no_gpu(args, tool):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(builder.doctor.diagnose, "run_host_tool", no_gpu)
    code, out, err = cli("doctor", "--host", "--stack", "flash-attn-fsdp", "--json")
    assert code == 0, err
    checks = {c["name"]: c["status"] for c in json.loads(out)["host"]}
    assert checks["engine"] == "ok" and checks["gpu"] == "unknown"
    assert {"shm", "ram", "disk", "driver", "nvidia-runtime"} <= set(checks)


def test_doctor_model_flags_decapoda_tokenizer(cli, tmp_path):
    model = tmp_path / "llama"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 32000,
                                                   "bos_token_id": 0, "eos_token_id": 1}))
    (model / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LLaMATokenizer"}))
    (model / "pytorch_model.bin").write_bytes(b"\0" * 1024)
    code, out, err = cli("doctor", "--model", str(model))
    assert code == 0, err
    assert "FAIL" in out and "tokenizer" in out


def test_a_failed_build_ends_with_doctors_diagnosis(cli, fake):
    fake.fail_at = 9
    fake.failure_line = " [ERROR]  Unable to pre-compile async_io"
    code, _, err = cli("build", "deepspeed-zero3-offload@2023.06", "-t", "cpu")
    assert code == 8
    assert "doctor: ds-aio-precompile (line " in err
    assert "  fix: " in err and err.rstrip().splitlines()[-1].startswith("full log: ")


def test_doctor_image_that_the_engine_does_not_have_is_a_selection_error(cli, monkeypatch):
    import builder.engine.connect
    from builder.engine.classic import DockerEngine

    class _NoImages(DockerEngine):
        def __init__(self):
            pass

        def image(self, ref):
            return None

    monkeypatch.setattr(builder.engine.connect, "connect", lambda *a, **k: _NoImages())
    code, out, err = cli("doctor", str(LOGS / "ds-aio-precompile--1.log"), "--image", "nope:1")
    assert (code, out) == (4, "")
    assert err == ("error: image nope:1 is not on this engine (pull or build it first; `docker images` lists what is "
                   "there)\n")
