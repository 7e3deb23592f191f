"""What multi-node training needs in this image, each piece used, not only found.

- no ssh host key in the image (they are made when a container starts: two nodes of one image
  must not share one);
- stackbuild-sshd makes host keys, starts sshd on loopback with a key made here and returns only once
  it listens (one connection attempt, no retry), and an ssh
  session with that key runs a command and gets the image's environment (its Python on PATH);
- pdsh reaches this host over that ssh (DeepSpeed's multi-node runner is pdsh);
- the RDMA user-space libraries load (libibverbs and its device list, librdmacm): with them NCCL
  can use InfiniBand/RoCE where the host passes devices through;
- /etc/nccl.conf, the NCCL defaults the image documents, is there and readable.
Runs in the network-less smoke container: loopback only.
"""

import ctypes
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

from _smoke import context, finish

check, manifest = context()
started = time.monotonic()


def run(cmd, timeout=60, env=None):
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return proc.returncode, proc.stdout.decode(errors="replace").strip()


def tail(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-3:]) or "no output"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


baked = sorted(glob.glob("/etc/ssh/ssh_host_*"))
if baked and not os.path.exists("/run/stackbuild-ssh/sshd.pid"):
    finish("fail", "the image carries ssh host keys ({}): every container of it would share them; delete them in "
                   "the layer that installs openssh-server (stackbuild-sshd makes them at start)".format(
                       ", ".join(os.path.basename(p) for p in baked)))
for tool in ("stackbuild-sshd", "ssh", "ssh-keygen", "pdsh"):
    if shutil.which(tool) is None:
        finish("fail", "{} is not on PATH: rebuild the image (its multinode layer installs it)".format(tool))

# the RDMA user-space libraries: load them and ask verbs for its devices (none on most hosts)
try:
    verbs = ctypes.CDLL("libibverbs.so.1")
    verbs.ibv_get_device_list.restype = ctypes.c_void_p
    verbs.ibv_get_device_list.argtypes = [ctypes.POINTER(ctypes.c_int)]
    verbs.ibv_free_device_list.argtypes = [ctypes.c_void_p]
    count = ctypes.c_int(-1)
    devices = verbs.ibv_get_device_list(ctypes.byref(count))
    if devices:
        verbs.ibv_free_device_list(devices)
    ctypes.CDLL("librdmacm.so.1")
except (OSError, AttributeError) as exc:
    finish("fail", "the RDMA libraries do not load: {} (install libibverbs1, ibverbs-providers and librdmacm1; "
                   "without them NCCL uses TCP sockets on InfiniBand/RoCE)".format(exc))
providers = glob.glob("/usr/lib/*/libibverbs/*.so") + glob.glob("/usr/lib/libibverbs/*.so")
if not providers:
    finish("fail", "libibverbs loads but has no device providers (install ibverbs-providers: mlx5, efa, ...)")

try:
    with open("/etc/nccl.conf", encoding="utf-8") as handle:
        nccl = [line.split("=", 1)[0] for line in handle if "=" in line and not line.lstrip().startswith("#")]
except OSError as exc:
    finish("fail", "/etc/nccl.conf, the image's NCCL defaults, cannot be read: {}".format(exc))
if not nccl:
    finish("fail", "/etc/nccl.conf sets no NCCL variable")

# sshd with host keys made now, a user key made now, loopback only
work = tempfile.mkdtemp(prefix="multinode-")
keys = os.path.join(work, "keys")
os.mkdir(keys)
key = os.path.join(work, "id_ed25519")
code, out = run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
if code:
    finish("fail", "ssh-keygen cannot make a key: {}".format(tail(out)))
shutil.copy(key + ".pub", os.path.join(keys, "id_ed25519.pub"))
port = free_port()
code, out = run(["stackbuild-sshd", "--listen", "127.0.0.1", "--port", str(port), "--keys", keys])
pidfile = "/run/stackbuild-ssh/sshd.pid"


def stop_sshd():
    try:
        with open(pidfile) as handle:
            os.kill(int(handle.read().strip()), 15)
    except (OSError, ValueError):
        pass


if code:
    finish("fail", "stackbuild-sshd does not start sshd: {}".format(tail(out)))
# stackbuild-sshd returns only once sshd listens (a launcher starts right after it): one attempt, no retry
try:
    socket.create_connection(("127.0.0.1", port), timeout=10).close()
except OSError as exc:
    stop_sshd()
    finish("fail", "stackbuild-sshd returned before sshd listened on 127.0.0.1:{} ({}): a launcher started "
                   "right after it is refused".format(port, exc))
made = sorted(os.path.basename(p) for p in glob.glob("/etc/ssh/ssh_host_*_key"))
ssh_opts = ["-p", str(port), "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
            "-o", "UserKnownHostsFile={}".format(os.path.join(work, "known_hosts")), "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR"]
code, out = run(["ssh"] + ssh_opts + ["127.0.0.1", "command -v python; echo stackbuild-ssh-ok"], timeout=30)
if code or "stackbuild-ssh-ok" not in out:
    stop_sshd()
    finish("fail", "sshd started but does not accept the key: {}".format(tail(out)))
python = out.splitlines()[0] if out.splitlines() else ""
if not python.startswith("/opt/venv/"):
    stop_sshd()
    finish("fail", "an ssh session does not get the image's environment: python there is '{}', not /opt/venv's "
                   "(stackbuild-sshd writes the container's environment for sshd)".format(python))

env = dict(os.environ, PDSH_RCMD_TYPE="ssh", PDSH_SSH_ARGS_APPEND=" ".join(ssh_opts))
code, out = run(["pdsh", "-S", "-w", "127.0.0.1", "echo", "stackbuild-pdsh-ok"], env=env)
stop_sshd()
if code or "127.0.0.1: stackbuild-pdsh-ok" not in out:
    finish("fail", "pdsh does not reach this host over ssh: {}".format(tail(out)))
shutil.rmtree(work, ignore_errors=True)

finish("pass", "sshd started with host keys made now ({}) and accepted a key; pdsh reached 127.0.0.1 over ssh; "
               "libibverbs loads ({} RDMA device{} here, {} provider{}), librdmacm loads; /etc/nccl.conf sets {}; "
               "in {:.1f} s".format(", ".join(made), count.value, "" if count.value == 1 else "s", len(providers),
                                    "" if len(providers) == 1 else "s", ", ".join(nccl),
                                    time.monotonic() - started))
