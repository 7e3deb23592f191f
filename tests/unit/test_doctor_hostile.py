"""doctor on hostile logs and model folders (issue 13, items 2, 3 and 6)."""

from __future__ import annotations

import json
import os
import struct

import pytest

from builder.doctor import logs as logscan
from builder.doctor.diagnose import check_model, diagnose, diagnose_file

NINJA = "RuntimeError: Ninja is required to load C++ extensions"


@pytest.mark.parametrize("text,expected", [
    ("\x1b[93m [WARNING] \x1b[0m x", " [WARNING]  x"),
    ("a\x1b]0;title\x07b", "ab"),                       # OSC window title, BEL-terminated
    ("a\x1b]52;c;cm0gLXJm\x1b\\b", "ab"),              # OSC 52 clipboard, ST-terminated
    ("a\x1bcb", "ab"),                                   # ESC c: reset the terminal
    ("a\x9b31mb\x9d0;t\x9cc", "abc"),                    # 8-bit CSI and OSC
    ("a\x1bP1$r\x1b\\b", "ab"),                          # DCS
    ("x\x00y\x7f\r\nz", "xy\nz"),
])
def test_every_control_sequence_is_stripped(text, expected):
    assert logscan.clean(text) == expected


def test_doctor_text_output_carries_no_control_sequence(cli, tmp_path):
    log = tmp_path / "x.log"
    log.write_text(f"\x1b]0;pwned\x07\x1bc\x9b2J{NINJA}\x1b]52;c;cm0gLXJmIH4=\x07\nnext\x07line\n")
    code, out, err = cli("doctor", str(log))
    assert code == 0, err
    assert "ds-ninja-missing" in out
    assert not any(c in out for c in "\x1b\x07\x9b\x9d\x00"), repr(out)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"])
def test_utf16_and_bom_logs_are_decoded(tmp_path, encoding):
    log = tmp_path / "x.log"
    log.write_bytes(f"step 1\n{NINJA}\n".encode(encoding))
    found = diagnose_file(log)
    assert [(d.issue.id, d.first_line) for d in found] == [("ds-ninja-missing", 2)]


def test_killed_after_a_carriage_return_is_found_on_its_line():
    log = "loading\nLoading checkpoint shards:  50%|#####     | 1/2 [00:10<00:10]\rKilled\nafter\n"
    found = diagnose(log)
    assert [(d.issue.id, d.first_line) for d in found] == [("host-oom-killed", 2)]
    assert "\r" not in found[0].excerpt[1][1] and "\\x0d" in found[0].excerpt[1][1]
    progress = "epoch 1\n" + "".join(f"{i}%\r" for i in range(100)) + "Killed\n"
    assert [(d.issue.id, d.first_line) for d in diagnose(progress)] == [("host-oom-killed", 2)]


def test_line_numbers_and_hits_survive_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(logscan, "CHUNK_CHARS", 64)
    text = "".join(f"line {i}\n" for i in range(1, 200)) + NINJA + "\n" + "tail\n" * 5
    found = diagnose(text)
    assert [(d.issue.id, d.first_line) for d in found] == [("ds-ninja-missing", 200)]
    assert [n for n, _ in found[0].excerpt] == [198, 199, 200, 201, 202]


def test_a_generic_line_and_its_context_in_different_chunks(monkeypatch):
    near = ("ModuleNotFoundError: No module named 'torch'\n" + "x\n" * 50 + "Getting requirements to build wheel\n"
            + "x\n" * 30 + "ModuleNotFoundError: No module named 'torch'\n")
    far = "Getting requirements to build wheel\n" + "x\n" * 400 + "ModuleNotFoundError: No module named 'torch'\n"
    whole = {name: [(d.issue.id, d.first_line, d.lines) for d in diagnose(text)]
             for name, text in (("near", near), ("far", far))}
    assert whole["near"] and not whole["far"]
    monkeypatch.setattr(logscan, "CHUNK_CHARS", 40)
    for name, text in (("near", near), ("far", far)):
        assert [(d.issue.id, d.first_line, d.lines) for d in diagnose(text)] == whole[name], name


@pytest.mark.parametrize("special", ["fifo", "device", "loop"])
def test_special_files_as_logs_are_exit_11_without_blocking(cli, tmp_path, special):
    path = tmp_path / "x.log"
    if special == "fifo":
        os.mkfifo(path)
    elif special == "loop":
        path.symlink_to(path)
    else:
        path = "/dev/zero"
    code, _, err = cli("doctor", str(path))
    assert code == 11, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def _shard(path, header: bytes | None = None, size: int = 1024):
    with open(path, "wb") as handle:
        if header is not None:
            handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(size)


def test_model_shard_headers_and_corrupt_json_are_reported(tmp_path):
    root = tmp_path / "model"
    root.mkdir()
    (root / "config.json").write_text('{"model_type": "llama", ')
    (root / "tokenizer_config.json").write_text("[" * 100000 + "]" * 100000)
    _shard(root / "good.safetensors", b'{"w": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}')
    _shard(root / "random.safetensors")
    with open(root / "random.safetensors", "wb") as handle:
        handle.write(os.urandom(1024))
    _shard(root / "short.safetensors", b'{"w": {"dtype": "U8", "shape": [9999], "data_offsets": [0, 9999]}}')
    (root / "pytorch_model.bin").write_bytes(b"<html>not found</html>")
    (root / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "\x1b]0;pwned\x07.safetensors", "b": "../../etc/passwd", "c": "good.safetensors"}}))
    checks = check_model(root)
    text = "\n".join(f"{c.name} {c.status} {c.detail}" for c in checks)
    assert "model-files fail config.json is not valid JSON" in text
    assert "model-files fail tokenizer_config.json is nested too deeply" in text
    assert "random.safetensors has no valid safetensors header" in text
    assert "short.safetensors has a safetensors header whose tensors do not fit the file" in text
    assert "pytorch_model.bin is neither a torch zip archive nor a pickle" in text
    assert "good.safetensors" not in text.split("are not valid shards")[1].split("\n")[0]
    assert "the index lists 2 shard(s) the folder lacks: ../../etc/passwd, \\x1b]0;pwned\\x07.safetensors" in text
    assert "\x1b" not in text


def test_a_pattern_first_seen_after_twenty_hits_still_counts(monkeypatch):
    """The scan stops following a pattern once its hits can change nothing, never before."""
    monkeypatch.setattr(logscan, "CHUNK_CHARS", 200)
    text = "Killed\n" * 300 + "torch.distributed.elastic...: failed (exitcode: -9) local_rank: 0\n" + "Killed\n" * 50
    found = {d.issue.id: d for d in diagnose(text)}
    killed = found["host-oom-killed"]
    assert killed.lines == tuple(range(1, 21))
    assert set(killed.matched) == {"^Killed$", r"exitcode: -9\)"}, killed.matched
    # the same with one chunk: the chunking changes nothing
    monkeypatch.setattr(logscan, "CHUNK_CHARS", 4 * 1024 * 1024)
    assert {d.issue.id: (d.lines, d.matched) for d in diagnose(text)} == \
        {i: (d.lines, d.matched) for i, d in found.items()}


_PEAK = ("import resource, sys\nfrom builder.doctor.diagnose import diagnose_file\n"
         "from builder.profile.knowledge import load_knowledge_base\nload_knowledge_base()\n"
         "diagnose_file(sys.argv[1])\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")


def test_a_log_of_a_million_matching_lines_takes_no_more_memory_than_one_line(tmp_path):
    """Issue 26: doctor held every matching line of a chunk (about 430 MB on millions of `Killed`)."""
    import subprocess
    import sys
    peaks = {}
    for name, lines in (("one", 1), ("many", 1_500_000)):
        log = tmp_path / f"{name}.log"
        log.write_text("Killed\n" * lines)
        done = subprocess.run([sys.executable, "-c", _PEAK, str(log)], capture_output=True, text=True, timeout=120,
                              check=True)
        peaks[name] = int(done.stdout) // 1024
    assert peaks["many"] - peaks["one"] < 60, f"peak RSS {peaks} MB: memory grows with the matching lines"
