"""Multi-node-ready images: which releases get the layer, where it sits, what it carries."""

from __future__ import annotations

import subprocess

import pytest

from builder.plan.build_plan import MULTINODE_APT, plan_build
from builder.profile.load import available_stacks, load_stack
from builder.render.dockerfile import render_context
from builder.safety.paths import templates_dir

SSHD = templates_dir() / "context" / "multinode" / "stackbuild-sshd"


def _current_and_era():
    for name in available_stacks():
        stack = load_stack(name)
        for release in stack.releases.values():
            for target in release.targets:
                yield stack, release, target


@pytest.mark.parametrize("stack,release,target", list(_current_and_era()),
                         ids=lambda v: getattr(v, "name", v))
def test_current_releases_are_multinode_ready_and_era_releases_unchanged(stack, release, target):
    plan = plan_build(stack, release.name, target)
    context = render_context(plan)
    files = dict(context.files)
    assert plan.multinode_apt == (MULTINODE_APT if not release.era else ())
    assert release.multinode is (not release.era)
    if release.era:
        assert "multinode" not in context.dockerfile and "multinode/stackbuild-sshd" not in files
        assert "multinode" not in [c.name for c in plan.checks]
        return
    text = context.dockerfile
    # after torch (shared), before the stack's own apt packages and its compiled ops
    torch_at = text.index("lock/2-torch.txt /opt/stackbuild/lock/")
    layer_at = text.index("COPY multinode/ /opt/stackbuild/multinode/")
    assert torch_at < layer_at < text.index("# The remaining pins")
    if plan.stack_apt:
        assert layer_at < text.index("# The stack's own system libraries")
    for name in MULTINODE_APT:
        assert f"      {name} \\\n" in text
    # host keys never in a layer; the start script, the NCCL defaults and ssh's settings are
    assert "rm -f /etc/ssh/ssh_host_*" in text
    assert {"multinode/stackbuild-sshd", "multinode/nccl.conf", "multinode/ssh_config"} <= set(files)
    assert "multinode" in [c.name for c in plan.checks]
    assert plan.manifest()["multinode"] is True


def test_the_multinode_layer_is_shared_by_every_stack_of_a_release_family():
    """Same base, Python and torch lock: the Dockerfiles agree up to and including the multinode layer."""
    heads = set()
    for name in ("alpaca-lora", "deepspeed-zero3-offload", "flash-attn-fsdp", "qlora"):
        text = render_context(plan_build(load_stack(name), "2026.11", "cpu")).dockerfile
        end = text.index("ENV PDSH_RCMD_TYPE=ssh")
        heads.add(text[text.index("FROM "):end])
    assert len(heads) == 1


def test_nccl_defaults_are_documented_variables():
    lines = [line for line in (templates_dir() / "context" / "multinode" / "nccl.conf").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines and all(line.startswith("NCCL_") and "=" in line for line in lines)


@pytest.mark.parametrize("args,expected", [
    (["--port", "x22"], "--port 'x22' is not a port number"),
    (["--port", "70000"], "--port '70000' is not a port number"),
    (["--port"], "--port needs a value"),
    (["--bogus"], "unknown argument '--bogus'"),
])
def test_sshd_start_script_refuses_bad_arguments(args, expected):
    proc = subprocess.run(["sh", str(SSHD), *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert expected in proc.stderr


def test_sshd_start_script_help():
    proc = subprocess.run(["sh", str(SSHD), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "--keys DIR" in proc.stdout and "--foreground" in proc.stdout


# -- doctor --host: what a multi-node job would use -----------------------------------------------

def _host_checks(tmp_path, sys_tree: dict[str, str], ip_output: str, target: str = "cuda") -> dict:
    from builder.doctor.diagnose import check_host
    from builder.errors import EngineUnavailable

    for rel, text in sys_tree.items():
        path = tmp_path / "sys" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "sys" / "class" / "net").mkdir(parents=True, exist_ok=True)

    def no_engine():
        raise EngineUnavailable("no engine")

    def no_smi(args):
        raise FileNotFoundError("nvidia-smi")

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 16384000 kB\nMemAvailable: 8192000 kB\n")
    checks = check_host(None, target=target, engine_probe=no_engine, nvidia_smi=no_smi, meminfo_path=meminfo,
                        shm_path=tmp_path, disk_path=tmp_path, sys_path=tmp_path / "sys", ip_addr=lambda: ip_output)
    return {c.name: c for c in checks}


IP_OUTPUT = """1: lo    inet 127.0.0.1/8 scope host lo
2: eth0    inet 10.1.2.3/24 brd 10.1.2.255 scope global eth0
2: eth0    inet6 fe80::1/64 scope link
3: ib0    inet 192.168.50.3/24 scope global ib0
"""


def test_doctor_host_reports_rdma_devices_and_interfaces(tmp_path):
    checks = _host_checks(tmp_path, {
        "class/infiniband/mlx5_0/ports/1/link_layer": "InfiniBand\n",
        "class/infiniband/mlx5_0/ports/1/state": "4: ACTIVE\n",
        "class/infiniband/mlx5_1/ports/1/link_layer": "Ethernet\n",
        "class/infiniband/mlx5_1/ports/1/state": "1: DOWN\n",
        "class/net/lo/operstate": "unknown\n",
        "class/net/eth0/operstate": "up\n", "class/net/eth0/mtu": "1500\n",
        "class/net/ib0/operstate": "up\n", "class/net/ib0/mtu": "2044\n",
        "class/net/docker0/operstate": "down\n",
    }, IP_OUTPUT)
    rdma, net = checks["rdma"], checks["network"]
    assert rdma.status == "ok"
    assert "mlx5_0 (port 1 InfiniBand ACTIVE)" in rdma.detail and "mlx5_1 (port 1 Ethernet DOWN)" in rdma.detail
    assert net.status == "ok"
    assert "eth0 10.1.2.3/24 (up, mtu 1500)" in net.detail and "ib0 192.168.50.3/24 (up, mtu 2044)" in net.detail
    assert "docker0 no address (down)" in net.detail and "lo " not in net.detail
    assert "would be eth0 here" in net.detail


def test_doctor_host_without_rdma_or_a_usable_interface(tmp_path):
    checks = _host_checks(tmp_path, {"class/net/lo/operstate": "unknown\n", "class/net/eth0/operstate": "down\n"},
                          "1: lo    inet 127.0.0.1/8 scope host lo\n")
    assert checks["rdma"].status == "warn" and "NCCL uses TCP sockets" in checks["rdma"].detail
    assert checks["rdma"].fix
    assert checks["network"].status == "warn" and "eth0 no address (down)" in checks["network"].detail
    cpu = _host_checks(tmp_path / "cpu", {}, "", target="cpu")
    assert cpu["rdma"].status == "ok"


# -- the multi-node tests' loopback check (tests/integration/nodes.py) ---------------------------------

# c10d at TORCH_CPP_LOG_LEVEL=INFO, two ranks meeting at 127.0.0.2 in a loopback-only namespace (torch
# 2.10): with hosts looked up in files only, every address is the real one ...
C10D_LOOPBACK = """\
[I1206 23:18:36.569710279 socket.cpp:955] [c10d] The client socket has connected to [::ffff:127.0.0.2]:29555 on \
SocketImpl(fd=12, addr=[::ffff:127.0.0.1]:54636, remote=[::ffff:127.0.0.2]:29555).
[I1206 23:18:36.569759231 TCPStore.cpp:316] [c10d - debug] TCP client connected to host 127.0.0.2:29555
[I1206 23:18:36.569859291 TCPStoreLibUvBackend.cpp:848] [c10d - trace] validate magic:1015412686 \
address:[::ffff:127.0.0.1]:54636
[I1206 23:18:36.5 socket.cpp:499] [c10d] The server socket has started to listen on [::]:29555.
[I1206 23:18:36.6 socket.cpp:955] [c10d] The client socket has connected to [node1]:29555 on SocketImpl(fd=3)
"""
# ... and with a resolver that does not answer (EAI_AGAIN), torch's formatSockAddr falls back to printing
# the bytes around its sockaddr pointer: the "IPv6 peer fdff:…" seen in an earlier Slurm run
C10D_UNRESOLVED = """\
[I1206 23:18:06.699405980 socket.cpp:859] [c10d - trace] The client socket is attempting to connect to \
[fdff:ffff::6894:fbab:ff7f:0]:3149.
[W1206 23:18:06.715593018 socket.cpp:207] [c10d] The hostname of the client socket cannot be retrieved. err=-3
[I1206 23:18:06.716183548 socket.cpp:955] [c10d] The client socket has connected to \
[5a8c:fbab:ff7f:0:ffff:ffff:ffff:ffff]:3149 on SocketImpl(fd=12, addr=[f401::f01f:9597:877f:0]:44027, \
remote=[200::608a:fbab:ff7f:0]:3149).
"""
NAMES = {"localhost", "stackbuild-sandbox", "node1", "node2"}


def test_loopback_check_accepts_c10d_logs_on_loopback_only():
    from tests.integration.nodes import non_loopback

    assert non_loopback(C10D_LOOPBACK, NAMES) == []


@pytest.mark.parametrize("line,culprit", [
    ("connected to [fdff:1234::5]:29500 on SocketImpl", "fdff:1234::5"),
    ("TCP client connected to host 192.0.2.2:29555", "192.0.2.2"),
    ("remote=[::ffff:10.1.2.3]:29555", "::ffff:10.1.2.3"),
    ("connected to [fd00::2]:22", "fd00::2"),
    ("connected to [vm]:29555", "vm"),  # a name the job's hosts file does not give
    ("connecting to [::]:29555", "::"),  # the unspecified address, where nothing listens
])
def test_loopback_check_names_every_address_off_loopback(line, culprit):
    from tests.integration.nodes import non_loopback

    found = non_loopback(C10D_LOOPBACK + line + "\n", NAMES)
    assert len(found) == 1 and culprit in found[0]


def test_loopback_check_refuses_logs_written_after_a_failed_reverse_lookup():
    from tests.integration.nodes import non_loopback

    found = non_loopback(C10D_UNRESOLVED, NAMES)
    assert any("fdff:ffff::6894:fbab:ff7f:0" in f for f in found)
    assert any("cannot be retrieved" in f and "unreadable" in f for f in found)
