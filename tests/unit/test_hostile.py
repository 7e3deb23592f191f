"""A corpus of hostile inputs over every command (issue 13, item 4).

Profiles, settings, locks, logs, model folders, names and output paths, generated from a few
families of hostile values (line breaks before instructions, control and escape sequences, shell
and Dockerfile syntax, wrong types, sizes, special files). Every case runs the command in-process
(typer's CliRunner) and fails on exit 1 (an internal error), on a traceback, on an exit code the
README does not document, and - for a profile that renders - on a Dockerfile whose instructions
differ in kind or number from the pristine profile's (an injection). A few cases run in a
subprocess with a timeout: the inputs that used to block forever (FIFOs) or exhaust memory.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from builder.render.guard import parse_dockerfile
from builder.errors import EXIT_CODES, INTERRUPTED, TERMINATED
from builder.lock.seal import SEAL, seal_lines

from .test_relock import index, stack  # noqa: F401 - the loopback index and a profile locked against it

ROOT = Path(__file__).resolve().parents[2]
GOOD = (Path(__file__).parent / "fixtures" / "good.yaml").read_text()
DOCUMENTED = set(EXIT_CODES) - {1, INTERRUPTED, TERMINATED}

# Values a careless or hostile person could put anywhere a string goes.
HOSTILE = [
    "rsync\nRUN touch /pwned",
    "x\n",
    "x\r\nRUN id",
    "x\\\nRUN id",
    "x\u2028RUN id",
    "x\x85RUN id",
    "x\x00y",
    "\x1b]0;pwned\x07\x1b[2J",
    "$(id)",
    "`id`; rm -rf /",
    "a\"b'c",
    "<<EOF",
    "FROM scratch AS x",
    "--mount=type=secret,id=x",
    "# escape=`",
    "",
    " ",
    "x" * 5000,
    # issue 26: bidi overrides and isolates, zero-width characters: text shown in another order than it runs
    "x\u202eRUN id\u202c",
    "a\u2066b\u2069c",
    "zero\u200bwidth\ufeff",
]
# YAML for non-strings, written as is.
NON_STRINGS = ["1.10", "true", "null", "[1, 2]", "{a: 1}", "&a [*a]"]

FIELDS = [
    ("title", "title: A good stack", "title: {v}"),
    ("apt", "  - libaio-dev", "  - libaio-dev\n  - {v}"),
    ("file-key", "  config.json:", "  {v}:"),
    ("file-description", "    description: a config", "    description: {v}"),
    ("fix-detail", "    detail: libaio-dev before deepspeed", "    detail: {v}"),
    ("summary", "    summary: era release", "    summary: {v}"),
    ("torch", '    torch: "2.0.1"', "    torch: {v}"),
    ("cpu-python", 'python: "3.9"', "python: {v}"),
    ("cpu-base", "base: debian:bullseye-slim", "base: {v}"),
    ("with-torch", "      - numpy==1.24.4", "      - {v}"),
    ("bootstrap", "      - pip==23.1.2", "      - pip==23.1.2\n      - {v}"),
    ("env-name", 'BNB_CUDA_VERSION: "118"', '{v}: "118"'),
    ("env-value", 'DS_BUILD_CPU_ADAM: "1"', "DS_BUILD_CPU_ADAM: {v}"),
    ("why", "        why: offload ops", "        why: {v}"),
    ("requires", "          - ninja==1.11.1", "          - {v}"),
    ("package", "      - transformers==4.28.1", "      - {v}"),
    ("patch-id", "      - id: fsdp-save-cpu-clone", "      - id: {v}"),
    ("patch-summary", "        summary: clone on the CPU", "        summary: {v}"),
    ("patch-file", "        file: distributed/fsdp/_state_dict_utils.py", "        file: {v}"),
    ("option-name", "      extra:", "      {v}:"),
    ("release-key", '  "2023.06":', "  {v}:"),
]

PROFILE_CASES = [(f"{name}:{index}", old, new.format(v=json.dumps(value)))
                 for name, old, new in FIELDS for index, value in enumerate(HOSTILE)]
PROFILE_CASES += [(f"{name}:yaml{index}", old, new.format(v=value))
                  for name, old, new in FIELDS for index, value in enumerate(NON_STRINGS)]

WHOLE_FILES = {
    "empty": "",
    "a list": "- a\n- b\n",
    "a scalar": "just text\n",
    "binary": "\x00\x01\x02" * 100,
    "invalid utf-8": None,  # written as bytes below
    "bom": "\ufeff" + GOOD,
    "tabs": GOOD.replace("  ", "\t", 3),
    "bomb": "\n".join(["a: &a [" + ",".join(['"x"'] * 9) + "]"]
                      + [f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join(["*" + chr(96 + i)] * 9) + "]"
                         for i in range(1, 10)]),
    "deep flow": "[" * 20000 + "]" * 20000,
    "deep block": "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "x: 1\n",
    "recursive alias": "a: &x [*x]\n",
    "merge key bomb": "a: &a {x: 1}\nb: {<<: *a, y: 2}\n" * 50,
    "huge": "title: '" + "x" * (300 * 1024) + "'\n",
    "duplicate keys": GOOD + "title: again\n",
    "python tag": "!!python/object/apply:os.system ['id']\n",
    "unknown tag": "name: !custom good\n",
    "many documents": GOOD + "---\n" + GOOD,
}


@pytest.fixture(autouse=True, scope="module")
def _build_the_cli_once():
    """typer rebuilds the click command on every CliRunner call (most of its time): build it once here."""
    import typer.testing
    original = typer.testing._get_command
    built: dict[int, object] = {}
    typer.testing._get_command = lambda app: built.setdefault(id(app), original(app))
    yield
    typer.testing._get_command = original


# what never reaches a terminal raw: escape sequences and invisible characters (bidi, zero-width)
RAW = re.compile(r"[\x1b\x07\x9b\x9d\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def _check(code: int, out: str, err: str, what: str) -> None:
    assert code != 1, f"{what}: exit 1 (internal error): {err[-500:]}"
    raw = RAW.search(out + err)
    assert raw is None, f"{what}: {raw[0]!r} printed raw: {(out + err)[max(0, raw.start() - 80):raw.end() + 80]!r}"
    assert code in DOCUMENTED | {0}, f"{what}: undocumented exit code {code}: {err[-300:]}"
    assert "Traceback" not in out + err, f"{what}: traceback"
    if code == 2 and err.startswith("Usage: "):
        return  # the parser's own usage error (exit 2, documented)
    if code:
        assert err.startswith("error: "), f"{what}: no 'error:' line: {err[:200]!r}"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The instruction keywords of the untouched profile, per target."""
    from typer.testing import CliRunner

    from builder.cli.commands import app
    folder = tmp_path_factory.mktemp("pristine")
    (folder / "good.yaml").write_text(GOOD)
    keywords = {}
    for target in ("cpu", "cuda"):
        result = CliRunner().invoke(app, ["render", str(folder / "good.yaml"), "-t", target])
        assert result.exit_code == 0, result.stderr
        keywords[target] = [i.keyword for i in parse_dockerfile(result.stdout)[1]]
    return keywords


def _no_injection(text: str, keywords: list[str], what: str) -> None:
    got = [i.keyword for i in parse_dockerfile(text)[1]]
    # a harmless value may add a COPY or RUN only by adding a patch or option: those cases never
    # render with a different count, so any difference is an injection
    assert got == keywords, f"{what}: instructions {got} differ from the plan's {keywords}"


@pytest.mark.parametrize("case", PROFILE_CASES, ids=[c[0] for c in PROFILE_CASES])
def test_hostile_profile_values(case, cli, tmp_path, pristine):
    name, old, new = case
    assert old in GOOD, name
    path = tmp_path / "good.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    # every field reaches the cpu target's Dockerfile except the cuda target's own env
    for target in ("cuda",) if name.startswith("env-name") else ("cpu",):
        code, out, err = cli("render", str(path), "-t", target)
        _check(code, out, err, f"{name} ({target})")
        if code == 0:
            _no_injection(out, pristine[target], f"{name} ({target})")
    if RAW.search(new):  # what show prints of it is checked too
        code, out, err = cli("show", str(path))
        _check(code, out, err, f"{name} (show)")


@pytest.mark.parametrize("name", list(WHOLE_FILES))
def test_hostile_profile_files(name, cli, tmp_path):
    path = tmp_path / "good.yaml"
    if WHOLE_FILES[name] is None:
        path.write_bytes(b"name: good\ntitle: \xff\xfe\n")
    else:
        path.write_text(WHOLE_FILES[name])
    for args in (("show", str(path)), ("render", str(path), "-t", "cpu"), ("lock", "--check", str(path))):
        code, out, err = cli(*args)
        _check(code, out, err, f"{name}: {args[0]}")
        if name != "bom":
            assert code != 0, f"{name}: {args[0]} accepted it"


SPECS = ["../../etc/passwd", "qlora@../../x", "qlora@", "@2023.07", "qlora@2023.07@x", "QLORA", "qlora\n",
         "qlora@2026.11\nRUN x", "-", ".", "/", "/dev/null", "/dev/zero", "\x1b[2J", "x" * 300, "qlora@" + "9" * 300,
         "stacks/", "qlora.yaml", "./nope.yml", "known-issues"]


@pytest.mark.parametrize("spec", SPECS)
def test_hostile_stack_names(spec, cli):
    for args in (("show", spec), ("render", spec, "-t", "cpu"), ("lock", "--check", spec)):
        code, out, err = cli(*args)
        _check(code, out, err, f"{spec!r}: {args[0]}")
        assert code != 0
        assert "\x1b" not in err


@pytest.mark.parametrize("value", ["cpu\n", "CPU", "", "rocm", "cpu;id", "\x1b[2J"])
def test_hostile_targets_and_options(value, cli):
    for args in (("render", "qlora", "-t", value), ("render", "qlora", "-t", "cpu", "--with", value)):
        code, out, err = cli(*args)
        _check(code, out, err, f"{value!r}: {args}")
        assert code != 0 or value == ""  # an empty -t or --with is the default


SETTINGS = ["registry", "build_network", "ca_bundle", "pip_index_url", "pip_extra_index_url", "debian_mirror"]
SETTING_VALUES = ["u:TOKEN@host/simple", "https:/u:TOKEN@host/simple", "https://u:TOKEN@host:99999/simple",
                  "https://host/simple?token=TOKEN", "ftp://u:TOKEN@h/x", "http://[::1", "http://h/x\nRUN id",
                  "/dev/zero", "/", "\x1b]0;x\x07", "x" * 5000, "HOST:5000/X", "https://u:TOKEN@h/a https://b/",
                  # issue 26: every spelling of a URL credential
                  "https://user:p@TOKEN@host/simple", "https://:TOKEN@host/simple", "https://TOKEN:@host/simple",
                  "https://us@er:TOKEN@host/simple", "https://host/simple?bearer=TOKEN",
                  "https://host/simple?jwt=TOKEN", "https://host/simple#token=TOKEN", "https://u:TOKEN@h\u202e/s"]


@pytest.mark.parametrize("setting", SETTINGS)
def test_hostile_settings(setting, cli, fake, tmp_path, monkeypatch):
    for value in SETTING_VALUES:
        monkeypatch.setenv(f"STACKBUILD_{setting.upper()}", value)
        for args in (("config", "show"), ("config", "show", "--json")):
            code, out, err = cli(*args)
            _check(code, out, err, f"{setting}={value!r}")
            assert "TOKEN" not in out + err, f"{setting}={value!r}: a credential was printed"
            assert "\x1b" not in out + err
        monkeypatch.delenv(f"STACKBUILD_{setting.upper()}")
        config = tmp_path / "config.toml"
        config.write_text(f"{setting} = {json.dumps(value)}\n")
        code, out, err = cli("--config", str(config), "config", "show")
        _check(code, out, err, f"file {setting}={value!r}")
        assert "TOKEN" not in out + err


CONFIG_FILES = {
    "deep": "a = " + "[" * 3000 + "]" * 3000 + "\n",
    "deep tables": "".join(f"[{'.'.join(['t'] * 50)}]\n"),
    "binary": "\x00\x01",
    "not toml": "registry: x\n",
    "unknown": "colour = 1\n",
    "wrong type": "build_network = 5\n",
    "huge": "registry = '" + "x" * (2 * 1024 * 1024) + "'\n",
    "bom": "\ufeffregistry = 'x'\n",
}


@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_hostile_config_files(name, cli, fake, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG_FILES[name])
    code, out, err = cli("--config", str(config), "config", "show")
    _check(code, out, err, name)
    assert code == 6


def _lock_variants() -> list[tuple[str, str]]:
    text = (ROOT / "stacks" / "locks" / "qlora@2026.11-cpu.txt").read_text()
    lines = text.split("\n")
    step = max(1, len(lines) // 40)
    out = []
    for index in range(0, len(lines) - 1, step):  # delete, duplicate and alter every step-th line
        out.append((f"delete line {index + 1}", "\n".join(lines[:index] + lines[index + 1:])))
        out.append((f"duplicate line {index + 1}", "\n".join(lines[:index + 1] + lines[index:])))
        altered = lines[index][:-1] + ("0" if not lines[index].endswith("0") else "1") if lines[index] else " "
        out.append((f"alter line {index + 1}", "\n".join(lines[:index] + [altered] + lines[index + 1:])))
    return out


LOCK_VARIANTS = _lock_variants()


def test_every_lock_edit_is_caught(cli, tmp_path):
    import shutil
    (tmp_path / "locks").mkdir()
    shutil.copy(ROOT / "stacks" / "qlora.yaml", tmp_path / "qlora.yaml")
    for lock in (ROOT / "stacks" / "locks").glob("qlora@*.txt"):
        shutil.copy(lock, tmp_path / "locks" / lock.name)
    target = tmp_path / "locks" / "qlora@2026.11-cpu.txt"
    assert len(LOCK_VARIANTS) >= 100
    for name, text in LOCK_VARIANTS:
        target.write_text(text)
        code, out, err = cli("lock", "--check", f"{tmp_path / 'qlora.yaml'}@2026.11", "-t", "cpu")
        _check(code, out, err, name)
        assert code == 13, f"{name}: lock --check passed an edited lock"


# -- forged locks: edited, then sealed again (the seal is a plain sha256: anyone can recompute it) ----

def reseal(text: str) -> str:
    """A lock edited and then sealed again, as anyone who can edit a lock can do."""
    lines = text.split("\n")
    at = next(i for i, line in enumerate(lines) if SEAL.match(line))
    unsealed = [line for line in lines if not SEAL.match(line)]
    return "\n".join(unsealed[:at] + seal_lines("\n".join(unsealed)) + unsealed[at:])


GIT = "git+https://github.com/huggingface/peft.git@3714aa2fff158fdfa637b2b65952580801d890b2"
HASHED = " \\\n    --hash=sha256:" + "ab" * 32
# Entries no resolver writes, added to [packages] of a committed lock that is then sealed again.
FORGED_ENTRIES = {
    "url wheel": "evil @ https://files.example/evil-1.0-py3-none-any.whl" + HASHED,
    "bare url wheel": "https://files.example/evil-1.0-py3-none-any.whl" + HASHED,
    "file wheel": "evil @ file:///tmp/evil-1.0-py3-none-any.whl",
    "local path": "./evil-1.0-py3-none-any.whl",
    "editable git": "-e git+https://github.com/o/evil.git#egg=evil",
    "editable long": "--editable git+https://github.com/o/evil.git#egg=evil",
    "git pin undeclared": f"peft @ {GIT}",
    "git pin other commit": "peft @ git+https://github.com/huggingface/peft.git@" + "f" * 40,
    "git pin by branch": "peft @ git+https://github.com/huggingface/peft.git@main",
    "git+ in a hashed entry": f"evil==1.0 git+https://github.com/o/evil.git{HASHED}",
    "index option": "evil==1.0 -i https://evil.example/simple" + HASHED,
    "index option long": "evil==1.0 --index-url=https://evil.example/simple" + HASHED,
    "extra index line": "--extra-index-url https://evil.example/simple",
    "find links": "--find-links https://evil.example/wheels",
    "trusted host": "--trusted-host evil.example",
    "requirement file": "-r https://evil.example/more.txt",
    "marker": "evil==1.0 ; python_version >= '3'" + HASHED,
    "marker tight": "evil==1.0;sys_platform=='linux'" + HASHED,
    "extras": "evil[all]==1.0" + HASHED,
    "no hash": "evil==1.0",
    "range": "evil>=1.0" + HASHED,
    "md5 hash": "evil==1.0 \\\n    --hash=md5:" + "ab" * 16,
    "no-binary": "evil==1.0 --no-binary=:all:" + HASHED,
    "comment in a section": "# evil==1.0",
}


def test_a_resealed_lock_with_an_entry_no_resolver_writes_is_refused(cli, tmp_path):
    import shutil
    (tmp_path / "locks").mkdir()
    shutil.copy(ROOT / "stacks" / "qlora.yaml", tmp_path / "qlora.yaml")
    target = tmp_path / "locks" / "qlora@2026.11-cpu.txt"
    honest = (ROOT / "stacks" / "locks" / "qlora@2026.11-cpu.txt").read_text()
    spec = f"{tmp_path / 'qlora.yaml'}@2026.11"
    for name, entry in FORGED_ENTRIES.items():
        target.write_text(reseal(honest.replace("# [last]\n", entry + "\n# [last]\n")))
        for args in (("lock", "--check", spec, "-t", "cpu"), ("render", spec, "-t", "cpu")):
            code, out, err = cli(*args)
            _check(code, out, err, name)
            assert code == 13, f"{name}: {args[0]} accepted a resealed lock with {entry!r}"
            assert "never by editing it" in out + err and "Traceback" not in out + err, name


def test_a_resealed_lock_declaring_a_git_pin_the_profile_lacks_is_stale(cli, tmp_path):
    import shutil
    (tmp_path / "locks").mkdir()
    shutil.copy(ROOT / "stacks" / "qlora.yaml", tmp_path / "qlora.yaml")
    honest = (ROOT / "stacks" / "locks" / "qlora@2026.11-cpu.txt").read_text()
    forged = honest.replace("# input last: peft==0.21.2\n", f"# input last: peft==0.21.2\n# input last: evil @ {GIT}\n")
    (tmp_path / "locks" / "qlora@2026.11-cpu.txt").write_text(reseal(forged.replace("# [last]\n", f"# [last]\nevil @ {GIT}\n")))
    code, out, err = cli("lock", "--check", f"{tmp_path / 'qlora.yaml'}@2026.11", "-t", "cpu")
    assert code == 13 and "+# input last: evil @" not in out and "-# input last: evil @ git+" in out, out + err


def _entry(text: str, name: str) -> str:
    return re.search(rf"^{name}==.*?(?=^\S|^# |\Z)", text, re.M | re.S)[0]


def _resolvable_forgeries(text: str, index) -> dict[str, tuple[str, str]]:
    """Forgeries the parser cannot see (a resolver writes such lines): name -> (text, what --resolve says)."""
    dep, other = _entry(text, "dep"), index.releases["other"][0]
    dep_05 = index.releases["dep"][0]
    assert dep_05.version == "0.5"
    return {
        "a hash replaced": (text.replace(index.releases["dep"][1].sha256, "e" * 64),
                            "sha256:" + "e" * 64 + " is not a hash the index publishes for it"),
        "a version no resolution picks (dep>=1.0 is required)": (
            text.replace(dep, f"dep==0.5 \\\n    --hash=sha256:{dep_05.sha256}\n"),
            "[packages] dep==0.5: the resolution has dep==1.0"),
        "a version the index does not have": (text.replace("dep==1.0 ", "dep==1.0.1 "),
                                               "[packages] dep==1.0.1: the resolution has dep==1.0"),
        "a transitive package removed": (text.replace(dep, ""),
                                         "[packages] dep==1.0: in the resolution but not in the lock"),
        "a package added": (text.replace(dep, dep + f"other==2.0 \\\n    --hash=sha256:{other.sha256}\n"),
                            "[packages] other==2.0: no such package in the resolution"),
        "a package moved to another section": (
            text.replace(dep, "").replace("# [torch]\n", "# [torch]\n" + dep),
            "[torch] dep==1.0: the resolution puts it in [packages]"),
        "torch's cut-off moved": (text.replace("# torch-exclude-newer: 2026-01-21T23:59:59Z",
                                               "# torch-exclude-newer: 2026-11-28T23:59:59Z"),
                                  "torch-exclude-newer is 2026-11-28T23:59:59Z; torch's release on the index gives"),
    }


def test_check_resolve_fails_on_a_resealed_forgery_that_plain_check_passes(cli, index, stack):
    spec = f"{stack / 'relock.yaml'}@2026.11"
    assert cli("lock", spec, "-t", "cpu")[0] == 0
    lock = stack / "locks" / "relock@2026.11-cpu.txt"
    honest = lock.read_text()
    code, out, err = cli("lock", "--check", "--resolve", spec, "-t", "cpu")
    assert code == 0 and "ok        relock@2026.11 (cpu)" in out and "information" not in out, err
    for name, (forged, says) in _resolvable_forgeries(honest, index).items():
        assert forged != honest, name
        lock.write_text(reseal(forged))
        code, out, err = cli("lock", "--check", spec, "-t", "cpu")
        assert code == 0, f"{name}: the seal and the parser should not be what catches it here: {err}"
        code, out, err = cli("lock", "--check", "--resolve", spec, "-t", "cpu")
        _check(code, out, err, name)
        assert code == 13, f"{name}: lock --check --resolve passed a forged lock"
        assert "forged    relock@2026.11 (cpu)" in out and says in out, (name, out)
        assert "1 stale, edited, forged, missing or orphan: relock@2026.11 (cpu)" in err


LOGS = {
    "osc title": "\x1b]0;pwned\x07RuntimeError: Ninja is required to load C++ extensions\n",
    "osc clipboard": "\x1b]52;c;cm0gLXJmIH4=\x07Killed\n",
    "reset": "\x1bcKilled\n",
    "8-bit csi": "\x9b2J\x9b31mKilled\n",
    "dcs": "\x1bP1$r0m\x1b\\Killed\n",
    "cr": "50%\rKilled\n",
    "crlf": "a\r\nKilled\r\n",
    "nul": "a\x00b\n",
    "latin-1": None,
    "long line": "Killed " * 100000 + "\n",
    "blank lines": "\n" * 200000,
    "only cr": "\r" * 100000,
    "unterminated osc": "\x1b]0;" + "a" * 100000 + "\nKilled\n",
    "bidi": "\u202eKilled\u202c\n",
    "surrogates": "\ud800\n",
    "utf-16": None,
    # issue 26: a credential a tool printed, in the excerpt doctor shows
    "credential": "Looking in indexes: https://user:TOKEN@pypi.example/simple, https://h/s?jwt=TOKEN\nKilled\n",
    "invisible": "\u202e\u2066\u200b\ufeffKilled\u2069\n",
}


@pytest.mark.parametrize("name", list(LOGS))
def test_hostile_logs(name, cli, tmp_path):
    log = tmp_path / "x.log"
    if name == "latin-1":
        log.write_bytes("Killed é\n".encode("latin-1"))
    elif name == "utf-16":
        log.write_bytes("\x1b]0;x\x07Killed\n".encode("utf-16"))
    else:
        log.write_bytes(LOGS[name].encode("utf-8", "surrogatepass"))
    for args in (("doctor", str(log)), ("doctor", str(log), "--json"), ("doctor", str(log), "--stack", "qlora")):
        code, out, err = cli(*args)
        _check(code, out, err, f"{name}: {args}")
        assert code in (0, 11)
        assert "TOKEN" not in out + err, f"{name}: a credential was printed"
        if "--json" not in args:
            assert not any(c in out for c in "\x1b\x07\x9b\x9d\x00\r\u202e\u2066\u2069\u200b\ufeff"), \
                f"{name}: control or invisible characters in {out[:200]!r}"


def _model(root: Path, files: dict[str, bytes | str]) -> Path:
    root.mkdir()
    for name, content in files.items():
        (root / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def _safetensors(header: bytes, size: int = 64) -> bytes:
    return (struct.pack("<Q", len(header)) + header).ljust(size, b"\0")


MODELS = {
    "corrupt config": {"config.json": "{", "model.safetensors": _safetensors(b"{}")},
    "deep config": {"config.json": "[" * 100000 + "]" * 100000},
    "config list": {"config.json": "[1]"},
    "config binary": {"config.json": b"\xff\xfe\x00"},
    "hostile index": {"model.safetensors.index.json": json.dumps(
        {"weight_map": {"a": "\x1b]0;x\x07", "b": "../x", "c": "a\x00b", "d": 5, "e": ["x"]}})},
    "index list": {"pytorch_model.bin.index.json": "[]"},
    "deep index": {"model.safetensors.index.json": '{"weight_map": ' + "[" * 50000 + "]" * 50000 + "}"},
    "random shard": {"model.safetensors": os.urandom(256)},
    "huge header length": {"model.safetensors": struct.pack("<Q", 2 ** 63) + b"{}"},
    "empty shard": {"model.safetensors": b""},
    "html bin": {"pytorch_model.bin": "<html>404</html>"},
    "hostile tokenizer": {"config.json": json.dumps({"model_type": "llama", "vocab_size": 32000,
                                                     "bos_token_id": "\x1b[2J", "eos_token_id": [1]}),
                          "tokenizer_config.json": json.dumps({"tokenizer_class": "\x1b]0;x\x07"})},
    "hostile names": {"\x1b[2J.safetensors": _safetensors(b"{}"), "a\nb.bin": b"PK\x03\x04"},
    # issue 26: architectures of every JSON type
    "architectures true": {"config.json": '{"architectures": true, "model_type": "llama"}'},
    "architectures 1.5": {"config.json": '{"architectures": 1.5, "vocab_size": 32000}'},
    "architectures 5": {"config.json": '{"architectures": 5}'},
    "architectures object": {"config.json": '{"architectures": {"a": 1}}'},
    "architectures string": {"config.json": json.dumps({"architectures": "LlamaForCausalLM", "vocab_size": 32000,
                                                        "bos_token_id": 0, "eos_token_id": 1})},
    "architectures mixed": {"config.json": '{"architectures": [null, 1, ["x"], "LlamaForCausalLM"]}'},
    "lfs pointer name": {"\x1b]0;x\x07model.safetensors": b"version https://git-lfs.github.com/spec/v1\noid sha256:"
                         + b"a" * 64 + b"\nsize 1000\n"},
}


@pytest.mark.parametrize("name", list(MODELS))
def test_hostile_model_folders(name, cli, tmp_path):
    root = _model(tmp_path / "m", MODELS[name])
    for args in (("doctor", "--model", str(root)), ("doctor", "--model", str(root), "--json")):
        code, out, err = cli(*args)
        _check(code, out, err, name)
        assert code in (0, 11)
        if "--json" not in args:
            assert "\x1b" not in out + err and "\x07" not in out + err


OUTPUTS = ["dir/", "-", "", ".", "..", "/", "/dev/null", "/proc/self/status", "x" * 300, "a\nb", "\x1b[2J",
           "missing/Dockerfile", "fifo", "link", "folder", "folder/"]


@pytest.mark.parametrize("output", OUTPUTS)
def test_hostile_output_paths(output, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo("fifo")
    os.symlink("target", "link")
    os.mkdir("folder")
    for option in ("-o", "--context"):
        code, out, err = cli("render", "qlora", "-t", "cpu", option, output)
        _check(code, out, err, f"{option} {output!r}")
    assert Path("fifo").is_fifo() and Path("link").is_symlink() and not Path("target").exists()
    assert Path("/dev/null").is_char_device()


NAMES = ["x/..", "../x", "", ".", "a b", "\x1b[2J", "x" * 300, "-rf", "x\ny", "mine/../../x"]


class _Containers:
    """Just enough engine for the container commands: one stackbuild container, 'mine'."""

    address = "unix:///fake.sock"

    def container(self, name):
        if name == "mine":
            return {"Name": "/mine", "Config": {"Labels": {"io.stackbuild.container": "1"}, "Image": "i"},
                    "State": {"Running": True, "Status": "running"}}
        return [] if "/" in name else None

    def containers(self, label):
        return [self.container("mine")]

    def close(self):
        pass


@pytest.mark.parametrize("name", NAMES)
def test_hostile_container_names(name, cli, monkeypatch):
    import builder.engine.connect
    monkeypatch.setattr(builder.engine.connect, "connect", lambda timeout=600, kind="classic", builder=None: _Containers())
    for args in (("stop", name), ("rm", name), ("exec", name, "--", "true"), ("shell", name),
                 ("run", "qlora", "-t", "cpu", "--name", name)):
        code, out, err = cli(*args)
        _check(code, out, err, f"{args}")
        assert code in (2, 4, 7, 10), f"{args}: exit {code}"
        assert "\x1b" not in err


def test_the_corpus_is_large_enough():
    lock_cases = len(LOCK_VARIANTS) + len(FORGED_ENTRIES) * 2 + 1 + 7
    total = (len(PROFILE_CASES) + len(WHOLE_FILES) + len(SPECS) * 3 + 12 + len(SETTINGS) * len(SETTING_VALUES)
             + len(CONFIG_FILES) + lock_cases + len(LOGS) * 3 + len(MODELS) * 2 + len(OUTPUTS) * 2 + len(NAMES) * 5)
    assert total >= 400, total


# -- what used to hang or exhaust memory, in a real process with a timeout ----------------------

def _run(args: list[str], env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def test_special_files_never_block_a_real_process(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    cases = [(["show", str(fifo)], None, 3), (["--config", str(fifo), "config", "show"], None, 6),
             (["doctor", str(fifo)], None, 11), (["doctor", "/dev/zero"], None, 11),
             (["config", "show"], {"STACKBUILD_CA_BUNDLE": "/dev/zero"}, 6)]
    for args, env, expected in cases:
        done = _run(args, env)  # a hang is a TimeoutExpired: the test fails
        assert done.returncode == expected, (args, done.stderr)
        assert "Traceback" not in done.stderr


_MEASURED = ("import resource, sys\nfrom builder.cli.commands import main\ntry:\n    main()\nfinally:\n"
             "    use = resource.getrusage(resource.RUSAGE_SELF)\n"
             "    print(f'\\nmeasured {use.ru_maxrss} {use.ru_utime + use.ru_stime}', file=sys.stderr)\n")


@pytest.mark.parametrize("name", ["bomb", "deep flow", "huge", "wide", "deep block"])
def test_no_profile_takes_more_than_256_mb_or_5_s_to_refuse(name, tmp_path):
    text = WHOLE_FILES.get(name) or ("a: [" + ",".join(["1"] * 120000) + "]\n")
    if name == "deep block":
        text = "".join(" " * i + "- " for i in range(0, 680)) + "x\n"  # 680 levels in 230 KiB
    path = tmp_path / "p.yaml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-c", _MEASURED, "show", str(path)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 3, done.stderr
    rss_kib, cpu_s = done.stderr.rsplit("measured ", 1)[1].split()
    assert int(rss_kib) < 256 * 1024, f"{name}: {int(rss_kib) // 1024} MB"
    assert float(cpu_s) < 5, f"{name}: {cpu_s} s of CPU"


# -- issue 26: labels are data, never paths; image references checked before any engine call ------

class _RecordingClient:
    """docker.APIClient's stand-in: records every API call; images are the ones given, with their labels."""

    def __init__(self, images: dict[str, dict]):
        self.images = images
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name):
        import docker.errors

        def call(*args, **kwargs):
            self.calls.append((name, args))
            if name == "inspect_image" and args[0] in self.images:
                return {"Id": "sha256:" + "d" * 64, "Config": {"Labels": self.images[args[0]]}}
            raise docker.errors.ImageNotFound(f"no such image: {args[0] if args else ''}")
        return call


@pytest.fixture
def recording(monkeypatch):
    """The real DockerEngine over a recording client: what reaches the engine's API is known."""
    import builder.engine.connect
    from builder.engine.classic import DockerEngine
    client = _RecordingClient({})
    monkeypatch.setattr(builder.engine.connect, "connect",
                        lambda timeout=600, kind="classic", builder=None: DockerEngine(client, "unix:///fake.sock"))
    return client


def _label_values(secret_file: Path) -> list[str]:
    return [str(secret_file), str(secret_file.parent / "." / secret_file.name), "../stacks/qlora", "qlora.yaml",
            "/etc/passwd", "stacks/qlora.yaml", "\x1b[2J", "QLORA", "qlora\n", "", " ", "x" * 300, "qlora@2026.11",
            "qlora\u202e", "~/x"]


def test_labels_never_name_a_file(cli, recording, tmp_path):
    """doctor --image and inspect read an image's stack label as a shipped stack's name, or refuse it:
    a label naming a file never gets that file read (its lines used to come back as 'unknown field')."""
    secret = tmp_path / "secret.yaml"
    secret.write_text("TOPSECRET_LINE: 1\nname: secret\n")
    log = tmp_path / "x.log"
    log.write_text("Killed\n")
    for index, value in enumerate(_label_values(secret)):
        recording.images["hostile:1"] = {"io.stackbuild.stack": value, "io.stackbuild.release": "2026.11",
                                         "io.stackbuild.target": "cpu", "io.stackbuild.content-hash": "x"}
        for args in (("doctor", str(log), "--image", "hostile:1"), ("inspect", "hostile:1"),
                     ("inspect", "hostile:1", "--json")):
            code, out, err = cli(*args)
            _check(code, out, err, f"label {value!r}: {args}")
            assert "TOPSECRET" not in out + err, f"label {value!r}: {args} read the file it names"
            if args[0] == "doctor":
                assert code == 4, f"label {value!r}: doctor exit {code}: {err}"
                assert "is not a stack or release name" in err or "unknown stack" in err, err
        code, out, err = cli("inspect", "hostile:1", "--json")
        assert json.loads(out)["matches_profile"] is None, value
    # a release label is a name too
    recording.images["hostile:1"] = {"io.stackbuild.stack": "qlora", "io.stackbuild.release": "../../x"}
    code, out, err = cli("doctor", str(log), "--image", "hostile:1")
    assert code == 4 and "io.stackbuild.release label '../../x' is not a stack or release name" in err


IMAGE_REFS = ["../../v1.40/containers/json", "x/../../containers/json:1", "UPPER:x", "a;b:c", "x@sha256:zz",
              "a//b:c", "x:-", "a:b:c", "x:y?all=1", "x y:z", "x:y#z", "localhost:99999/x:y", "\x1b[2J:x",
              "x:" + "t" * 200, "x\u202e:y"]


@pytest.mark.parametrize("ref", IMAGE_REFS)
def test_image_references_are_checked_before_any_engine_call(ref, cli, recording, tmp_path):
    log = tmp_path / "x.log"
    log.write_text("Killed\n")
    for args in (("doctor", str(log), "--image", ref), ("doctor", "-", "--image", ref), ("inspect", ref),
                 ("test", ref), ("run", ref), ("diff", ref, "qlora@2026.11")):
        code, out, err = cli(*args)
        _check(code, out, err, f"{ref!r}: {args}")
        if args[0] == "doctor":  # the others read a name without ':' as a stack (unknown: 3 or 4)
            assert code == 2, f"{ref!r}: {args}: exit {code}: {err}"
            assert "is not an image reference" in err or "has an invalid port" in err, err
        assert code in (2, 3, 4), f"{ref!r}: {args}: exit {code}: {err}"
        reached = [call for call in recording.calls if any(ref in str(a) for a in call[1])]
        assert not reached, f"{ref!r} reached the engine's API: {reached}"


@pytest.mark.parametrize("flag,value", [("--tag", "a//b"), ("--tag", "x:-"), ("--tag", "a:b:c"),
                                        ("--tag", "x@sha256:" + "a" * 64), ("--cache-from", "a//b:c"),
                                        ("--registry", ".."), ("--registry", "localhost:99999"),
                                        ("--registry", "a..b/x"), ("--registry", "-x")])
def test_image_names_are_refused_before_a_build(flag, value, cli, fake):
    code, out, err = cli("build", "qlora", "-t", "cpu", flag, value)
    _check(code, out, err, f"{flag} {value}")
    assert code == 6 and not fake.builds and not fake.pulls, err


# -- issue 26: signals at start-up: Ctrl-C or SIGTERM while the program still imports ---------------

# Runs the `stackbuild` console script as pyproject.toml declares it, with the import of the command
# line module slowed down (it says so on stderr first): a signal sent then lands in the start-up.
_SLOW_START = """
import builtins, sys, time, tomllib
entry = tomllib.load(open("pyproject.toml", "rb"))["project"]["scripts"]["stackbuild"]
real_import = builtins.__import__
def slow_import(name, globals=None, locals=None, fromlist=(), level=0):
    package = (globals or {}).get("__package__") or ""
    wanted = name if level == 0 else f"{package.rpartition('.')[0] if level == 2 else package}.{name}"
    if "builder.cli" not in sys.modules and (wanted == "builder.cli" or wanted.startswith("builder.cli.")):
        print("importing", file=sys.stderr, flush=True)
        time.sleep(30)
    return real_import(name, globals, locals, fromlist, level)
builtins.__import__ = slow_import
module, _, function = entry.partition(":")
sys.argv = ["stackbuild", "doctor", "-"]
main = getattr(__import__(module, fromlist=[function]), function)
sys.exit(main())
"""


@pytest.mark.parametrize("sig,code,said", [(2, INTERRUPTED, "error: interrupted\n"),
                                           (15, TERMINATED, "error: terminated\n")])
def test_a_signal_while_the_program_starts(sig, code, said):
    import signal

    # the default dispositions, as a terminal gives them: a shell without job control starts a background
    # command (`pytest &`) with SIGINT ignored, and a program rightly keeps an ignored SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_START], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT,
                                                                                           signal.SIGTERM)])
    import select
    ready, _, _ = select.select([proc.stderr], [], [], 60)
    if not ready:
        proc.kill()
    assert ready and proc.stderr.readline() == "importing\n", "the command line module was never imported"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert (proc.returncode, stdout, stderr) == (code, "", said)


@pytest.mark.parametrize("during", ["create_container", "start"])
def test_run_interrupted_while_starting_leaves_no_container(during):
    """Ctrl-C or SIGTERM while the engine creates or starts a working container: it is removed."""
    from builder.engine.classic import DockerEngine
    from builder.errors import Terminated

    class Client:
        removed: list[str] = []
        labels: dict = {}

        def create_host_config(self, **kwargs):
            return kwargs

        def create_container(self, image, **kwargs):
            Client.labels = kwargs["labels"]
            if during == "create_container":
                raise Terminated()  # the engine made it; the answer never came
            return {"Id": "c1"}

        def inspect_container(self, name):
            return {"Id": "c1", "Config": {"Labels": Client.labels}, "State": {"Status": "created"}}

        def start(self, container):
            raise KeyboardInterrupt()

        def remove_container(self, container, force):
            Client.removed.append(container)

    engine = DockerEngine(Client(), "unix:///fake.sock")
    with pytest.raises(KeyboardInterrupt):
        engine.start_container("img:1", "box", {"io.stackbuild.container": "1"}, None, network="none")
    assert Client.removed == ["c1"]


# -- issue 26: UTF-16 without a byte-order mark, in other scripts than Latin ------------------------

UTF16_TEXTS = {"cyrillic": "Загрузка модели: шард 3 из 8", "cjk": "训练开始，加载模型分片", "japanese": "日本語のみのログ",
               "emoji": "🚀 starting 😀🔥", "mixed": "模型 model Модель 🚀"}


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("script", list(UTF16_TEXTS))
def test_utf16_logs_without_a_bom_in_any_script(script, encoding, cli, tmp_path):
    log = tmp_path / "x.log"
    log.write_bytes(f"{UTF16_TEXTS[script]}\nloading checkpoint shards\nKilled\n".encode(encoding))
    code, out, err = cli("doctor", str(log))
    _check(code, out, err, f"{script} {encoding}")
    assert code == 0 and "host-oom-killed" in out and UTF16_TEXTS[script] in out, err


# -- issue 26: folders given to render --context ------------------------------------------------------

def test_render_context_into_the_empty_working_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("render", "qlora", "-t", "cpu", "--context", ".")
    _check(code, out, err, "--context .")
    assert code == 0 and (tmp_path / "Dockerfile").is_file() and not list(tmp_path.glob(".stackbuild-staging*"))


def test_render_context_keeps_an_existing_folders_mode(cli, tmp_path):
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    code, out, err = cli("render", "qlora", "-t", "cpu", "--context", str(folder))
    assert code == 0, err
    assert (folder.stat().st_mode & 0o777) == 0o700 and (folder / "Dockerfile").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["private"]  # no staging folder beside it


def test_render_context_into_an_empty_mount_point(cli, tmp_path, monkeypatch):
    """A mount point cannot be removed or renamed over (EBUSY): it is filled where it is."""
    import errno
    mount = tmp_path / "mnt"
    mount.mkdir()
    real_rmdir, real_rename = os.rmdir, os.rename

    def rmdir(path, *args, **kwargs):
        if Path(path) == mount:
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        return real_rmdir(path, *args, **kwargs)

    def rename(src, dst, *args, **kwargs):
        if Path(dst) == mount:
            raise OSError(errno.EBUSY, "Device or resource busy", str(dst))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rmdir", rmdir)
    monkeypatch.setattr(os, "rename", rename)
    code, out, err = cli("render", "qlora", "-t", "cpu", "--context", str(mount))
    assert code == 0, err
    assert (mount / "Dockerfile").is_file()


def test_a_failed_render_leaves_an_existing_folder_empty(cli, tmp_path, monkeypatch):
    folder = tmp_path / "out"
    folder.mkdir(mode=0o750)
    real_rename, calls = os.rename, []

    def rename(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(dst))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    code, out, err = cli("render", "qlora", "-t", "cpu", "--context", str(folder))
    _check(code, out, err, "failed fill")
    assert code == 5 and "No space left on device" in err
    assert list(folder.iterdir()) == [] and (folder.stat().st_mode & 0o777) == 0o750



# -- issue 26: folders typer would have refused (exit 2) are the commands' to judge ------------------

def test_unreadable_folders_get_the_commands_own_exit_code(cli, tmp_path, monkeypatch):
    """typer checks a Path option with os.access and answers 'not readable' with a usage error (2):
    an unreadable --model folder is doctor's (11), an unreadable --context folder render's (5)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access, real_iterdir = os.access, Path.iterdir

    def access(path, mode, *args, **kwargs):
        return False if Path(path) == locked else real_access(path, mode, *args, **kwargs)

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(Path, "iterdir", iterdir)
    code, out, err = cli("doctor", "--model", str(locked))
    _check(code, out, err, "--model")
    assert code == 11 and "Permission denied" in err, err
    code, out, err = cli("render", "qlora", "-t", "cpu", "--context", str(locked))
    _check(code, out, err, "--context")
    assert code == 5 and "Permission denied" in err, err


@pytest.mark.parametrize("args", [("test", "qlora:x", "--gpus", "lots"), ("test", "qlora:x", "--gpus", "0,,1"),
                                  ("test", "qlora:x", "--gpus", "all;id"), ("run", "qlora:x", "--gpus", "-1"),
                                  ("run", "qlora:x", "--network", "container:other"),
                                  ("run", "qlora:x", "--network", "nat"),
                                  ("run", "qlora:x", "--network", "none", "-p", "8888"),
                                  ("run", "qlora:x", "--network", "host", "-p", "8888:8888")])
def test_container_options_are_checked_before_a_container(args, cli, fake):
    code, out, err = cli(*args)
    _check(code, out, err, str(args))
    assert code == 2, f"{args}: exit {code}: {err}"



# -- issue 26, item 10: rm and stop take only stackbuild's containers, each once ----------------------

class _Labelled(_Containers):
    """'mine' (id 4f3c…, labelled io.stackbuild.container=1) and 'other' (labelled =false)."""

    removed: list[str]

    def __init__(self):
        self.removed = []

    def container(self, name):
        if name in ("mine", "4f3c2b1a0d9e"):
            return {"Id": "4f3c2b1a0d9e" + "0" * 52, "Name": "/mine", "Config": {"Labels": {LABEL_KEY: "1"}, "Image": "i"},
                    "State": {"Running": False, "Status": "exited"}}
        if name == "other":
            return {"Id": "9" * 64, "Name": "/other", "Config": {"Labels": {LABEL_KEY: "false"}, "Image": "i"},
                    "State": {"Running": True, "Status": "running"}}
        return None

    def containers(self, label):
        return [self.container("mine"), self.container("other")]

    def remove_container(self, name):
        self.removed.append(name)

    stop_container = remove_container


LABEL_KEY = "io.stackbuild.container"


def test_rm_takes_only_stackbuild_containers_and_each_once(cli, monkeypatch):
    import builder.engine.connect
    engine = _Labelled()
    monkeypatch.setattr(builder.engine.connect, "connect", lambda timeout=600, kind="classic", builder=None: engine)
    for args in (("rm", "-f", "other"), ("stop", "other")):
        code, out, err = cli(*args)
        _check(code, out, err, str(args))
        assert code == 4 and "not a stackbuild container" in err and not engine.removed, err
    code, out, err = cli("rm", "mine", "4f3c2b1a0d9e")
    assert code == 0 and out == "removed mine\n" and engine.removed == ["mine"], (out, err)
    code, out, err = cli("ps")
    assert "other" not in out


# -- nesting is the document's, not its text's (issue 26: a note of 300 "[" was refused) --------

BRACKETS_IN_TEXT = {
    "quoted": 'title: "' + "[" * 300 + '"',
    "single quoted": "title: '" + "{[" * 300 + "'",
    "plain": "title: see " + "[" * 300 + " and " + "}" * 300,
    "folded": "description: >-\n  " + "[" * 300 + "\n  " + "{" * 300,
    "comment": "title: A good stack  # " + "[" * 300,
}


@pytest.mark.parametrize("name", list(BRACKETS_IN_TEXT))
def test_brackets_inside_text_are_not_nesting(name, cli, tmp_path):
    line = BRACKETS_IN_TEXT[name]
    old = "description: >-\n  Used by the tests." if name == "folded" else "title: A good stack"
    assert old in GOOD
    path = tmp_path / "good.yaml"
    path.write_text(GOOD.replace(old, line, 1))
    code, out, err = cli("show", str(path))
    _check(code, out, err, name)
    assert code == 0, f"{name}: refused: {err}"
    if name != "comment":
        assert "[" * 300 in out or "{" * 300 in out or "{[" * 300 in out, f"{name}: the text was not shown"


REALLY_NESTED = {
    "flow 65": "title: " + "[" * 65 + "]" * 65,
    "flow in a key's value": GOOD.replace("title: A good stack", "title: " + "{a: " * 70 + "x" + "}" * 70),
    "block 65": "".join("  " * i + f"k{i}:\n" for i in range(65)) + "  " * 65 + "x: 1\n",
    "mixed": "a:\n" + "".join("  " * i + "- " for i in range(1, 40)) + "[" * 30 + "]" * 30 + "\n",
}


@pytest.mark.parametrize("name", list(REALLY_NESTED))
def test_a_document_nested_past_the_limit_is_refused_as_nesting(name, cli, tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(REALLY_NESTED[name])
    code, out, err = cli("show", str(path))
    _check(code, out, err, name)
    assert code == 3 and "nested more than 64 levels deep" in err, (name, err)


def test_sixty_four_levels_are_still_nesting_not_a_refusal(cli, tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(GOOD.replace("title: A good stack", "title: " + "[" * 63 + "]" * 63))
    code, out, err = cli("show", str(path))
    assert "nested more than" not in err and code == 3, err  # refused by the schema (a title is text), not the guard


# -- raw line breaks and escapes from any input never reach an error or a report (issue 26) --------

# One value with every way to start a line or move the cursor: a line feed, a carriage return,
# the Unicode line separator, NEL, and an escape sequence, each followed by a marker.
BREAKS = "v\nL1\rL2\u2028L3\x85L4\x1b[2JL5"
RAW_BREAKS = ("\nL1", "\rL2", "\u2028L3", "\x85L4", "\x1b")
_S = "qlora@2026.11"


def _break_cases() -> list[tuple[str, list[str], dict[str, str]]]:
    v = BREAKS
    cases = [[c, v] for c in ("show", "render", "build", "pull", "push", "inspect", "test", "run", "sbom", "audit", "lock")]
    cases += [["doctor", "--stack", v], ["doctor", "--image", v], ["doctor", v], ["doctor", "--model", v],
              ["doctor", "--host", "-t", v], ["exec", v, "--", "true"], ["shell", v], ["stop", v], ["rm", v],
              ["diff", v, _S], ["diff", _S, v], ["diff", _S, "qlora@2023.07", "-t", v], ["launch", v, _S],
              ["render", _S, "-t", "cpu", "-o", "/nonexistent/" + v],
              ["render", _S, "-t", "cpu", "--context", "/nonexistent/" + v],
              ["sbom", _S, "-t", "cpu", "-o", "/nonexistent/" + v], ["--config", "/nonexistent/" + v, "config", "show"],
              ["lock", _S, "--upgrade-package", v, "-t", "cpu"], ["show", _S + v], ["show", "/tmp/" + v + ".yaml"],
              ["show", "/tmp/" + v + "@2026.11"], ["test", _S, "-t", "cpu", "--gpus", v],
              ["test", _S, "-t", "cpu", "--only", v], ["test", _S, "-t", "cpu", "--junit", "/nonexistent/" + v]]
    for command in ("render", "build", "pull", "push", "inspect", "test", "run", "sbom", "lock", "launch"):
        base = [command, _S] if command != "launch" else [command, "slurm", _S]
        cases += [base + ["-t", v], base + ["-t", "cpu", "--with", v]]
    for option in ("--tag", "--registry", "--network", "--build-arg", "--engine", "--builder", "--cache-from",
                   "--cache-to", "--compression"):
        cases.append(["build", _S, "-t", "cpu", option, v])
    for option in ("--gpus", "--name", "-v", "-w", "-e", "--shm-size", "-p", "--network"):
        cases.append(["run", _S, "-t", "cpu", option, v])
    for option in ("--gpus-per-node", "--launcher", "--partition", "--interface", "--registry", "--image",
                   "--container", "--host", "--ssh-port", "--name", "-e", "-v", "--engine-arg", "-o"):
        for kind in ("slurm", "hosts", "k8s"):
            cases.append(["launch", kind, _S, "-t", "cpu", option, v, "--", "train.py"])
    for command in ("inspect", "test", "run", "sbom", "audit", "pull"):
        cases += [[command, "img:" + v], [command, "127.0.0.1:5000/" + v]]
    out = [(" ".join(c).replace(v, "V"), c, {}) for c in cases]
    for setting in ("REGISTRY", "BUILD_NETWORK", "CA_BUNDLE", "PIP_INDEX_URL", "DEBIAN_MIRROR", "ENGINE", "BUILDER",
                    "SIGNING_KEY", "VERIFY_KEYS", "PARTITION", "GPUS_PER_NODE", "NETWORK_INTERFACE"):
        out.append((f"STACKBUILD_{setting}=V", ["config", "show"], {f"STACKBUILD_{setting}": v}))
    return out


BREAK_CASES = _break_cases()


@pytest.mark.parametrize("case", BREAK_CASES, ids=[c[0] for c in BREAK_CASES])
def test_no_input_adds_a_line_or_moves_the_cursor(case, cli, monkeypatch, tmp_path):
    _, args, env = case
    monkeypatch.chdir(tmp_path)  # launch writes its job folder here when a value is accepted
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")  # an engine call fails fast (7)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = cli(*args)
    assert code != 1 and "Traceback" not in out + err, err[-500:]
    for raw in RAW_BREAKS:
        assert raw not in out + err, f"{raw!r} came back raw (exit {code}): {(out + err)[:400]!r}"


def test_lock_lines_log_lines_and_log_names_with_breaks_come_back_escaped(cli, tmp_path):
    import shutil
    (tmp_path / "locks").mkdir()
    shutil.copy(ROOT / "stacks" / "qlora.yaml", tmp_path / "qlora.yaml")
    honest = (ROOT / "stacks" / "locks" / "qlora@2026.11-cpu.txt").read_text()
    lines, one_line = honest.split("\n"), BREAKS.replace("\n", "")  # a lock line holds no line feed
    spec = f"{tmp_path / 'qlora.yaml'}@2026.11"
    for index in range(0, len(lines), max(1, len(lines) // 12)):
        for text in ("\n".join(lines[:index] + [lines[index] + one_line] + lines[index + 1:]),
                     reseal("\n".join(lines[:index] + ["evil==1.0" + one_line] + lines[index:]))):
            (tmp_path / "locks" / "qlora@2026.11-cpu.txt").write_text(text)
            for args in (("lock", "--check", spec, "-t", "cpu"), ("render", spec, "-t", "cpu")):
                code, out, err = cli(*args)
                assert code == 13, (index, args, err)
                assert not [raw for raw in RAW_BREAKS if raw in out + err], (index, args, out + err)
    for content in ("Killed" + BREAKS + "\nKilled\n", "nothing known here\n"):
        log = tmp_path / ("x" + BREAKS + ".log")
        log.write_text(content)
        for args in (("doctor", str(log)), ("doctor", str(log), "--stack", "qlora")):
            code, out, err = cli(*args)
            assert code == 0, err
            assert not [raw for raw in RAW_BREAKS if raw in out + err], (content, out + err)


def test_values_that_were_accepted_unchecked_are_refused(cli, tmp_path, monkeypatch):
    """doctor --host took any -t (and printed it as a target); launch --image wrote any text into the job."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("doctor", "--host", "-t", "rocm\nx")
    assert code == 4 and "unknown target 'rocm\\x0ax': targets are cuda, cpu" in err, err
    for kind in ("slurm", "hosts", "k8s"):
        code, out, err = cli("launch", kind, _S, "-t", "cpu", "--host", "127.0.0.2", "--image", "x:1\nsrun evil",
                             "--", "train.py")
        assert code == 2 and "--image 'x:1\\x0asrun evil' is not an image reference" in err, (kind, err)
        assert not list(tmp_path.iterdir()), f"{kind}: a job was written"


def test_check_resolve_fails_on_a_version_swapped_for_another_real_release(cli, index, stack):
    """Issue 26: a resealed lock whose package moved to another real release from before the date passed
    --resolve (the re-resolution preferred the lock's own versions) with an information line only."""
    import subprocess
    from .test_relock import BEFORE, commit
    index.add("dep", "1.1", BEFORE)  # two real releases from before the date satisfy app's dep>=1.0
    spec = f"{stack / 'relock.yaml'}@2026.11"
    assert cli("lock", spec, "-t", "cpu")[0] == 0
    lock = stack / "locks" / "relock@2026.11-cpu.txt"
    honest = lock.read_text()
    assert "\ndep==1.1 " in honest
    older = next(r for r in index.releases["dep"] if r.version == "1.0")
    forged = reseal(honest.replace(_entry(honest, "dep"), f"dep==1.0 \\\n    --hash=sha256:{older.sha256}\n"))
    says = "          [packages] dep==1.0: a resolution of the inputs as of 2026-11-28T23:59:59Z has dep==1.1"

    def check(*extra: str) -> tuple[int, str]:
        code, out, err = cli("lock", "--check", "--resolve", spec, "-t", "cpu", *extra)
        _check(code, out, err, "swapped version")
        return code, out

    lock.write_text(forged)
    assert cli("lock", "--check", spec, "-t", "cpu")[0] == 0  # the seal and the parser cannot see it
    code, out = check()  # a lock git does not have: every line must be the resolution's
    assert code == 13 and "forged    relock@2026.11 (cpu)" in out and says + "\n" in out, out
    lock.write_text(honest)
    commit(stack, "the honest lock")
    code, out = check()
    assert code == 0 and "information" not in out, out
    honest_commit = subprocess.run(["git", "-C", str(stack), "rev-parse", "HEAD"], capture_output=True,
                                   text=True, check=True).stdout.strip()
    lock.write_text(forged)  # the forgery as an edit, then committed: checked against the lock before it
    code, out = check()
    assert code == 13 and says + " (the previous lock had dep==1.1)\n" in out, out
    commit(stack, "a forged lock")
    code, out = check()
    assert code == 13 and says + " (the previous lock had dep==1.1)\n" in out, out
    # laundered by a later honest relock, the forgery is found from the revision the change started at
    profile = stack / "relock.yaml"
    profile.write_text(profile.read_text().replace("app==1.0", "app==1.1"))
    assert cli("lock", spec, "-t", "cpu")[0] == 0 and "\ndep==1.0 " in lock.read_text()
    commit(stack, "app 1.1")
    code, out = check("--base", honest_commit)
    assert code == 13 and says + " (the previous lock had dep==1.1)\n" in out, out
    code, out, err = cli("lock", "--check", "--resolve", spec, "-t", "cpu", "--base", "--output=x")
    assert code == 2 and "--base --output=x is not a git revision" in err, err


def test_a_changed_version_is_judged_against_the_resolutions_and_the_releases_other_locks():
    """change_problems, pure: which versions a change may make (issue 26)."""
    from builder.lock.format import Lock, LockedPackage, LockInputs
    from builder.lock.resolution import change_problems

    inputs = LockInputs("s", "3.11", "x86_64-manylinux_2_36", "2026-11-28T23:59:59Z", (("packages", ("app==1.0",)),))

    def lock(**versions: str) -> Lock:
        return Lock(inputs, (("packages", tuple(LockedPackage(n, v, f"{n}=={v}", ("sha256:" + "a" * 64,))
                                                for n, v in versions.items())),))

    committed, fresh = lock(app="1.0", dep="1.0"), lock(app="1.0", dep="1.1")
    cutoff = inputs.exclude_newer
    assert change_problems(committed, None, fresh, None, [], cutoff) == [
        "[packages] dep==1.0: a resolution of the inputs as of 2026-11-28T23:59:59Z has dep==1.1"]
    # kept from the previous lock: drift, not forgery
    assert change_problems(committed, lock(app="0.9", dep="1.0"), fresh, None, [], cutoff) == []
    # what `lock` makes preferring the previous lock
    assert change_problems(committed, lock(app="0.9", dep="0.9"), fresh, lock(app="1.0", dep="1.0"), [], cutoff) == []
    # what another lock of the release had before the change (an option's first lock prefers the plain one)
    assert change_problems(committed, None, fresh, None, [{"dep": "1.0"}], cutoff) == []
    assert change_problems(committed, None, fresh, None, [{"dep": "0.9"}], cutoff) != []
    assert change_problems(committed, lock(app="1.0", dep="1.1"), fresh, lock(app="1.0", dep="1.1"), [], cutoff) == [
        "[packages] dep==1.0: a resolution of the inputs as of 2026-11-28T23:59:59Z has dep==1.1 "
        "(the previous lock had dep==1.1)"]
