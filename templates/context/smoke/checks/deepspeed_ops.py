"""DeepSpeed's pre-compiled ops are installed and load from their .so, without a JIT build.

The ops the image must have come from the build environment of deepspeed in the manifest's
"compiled" list: DS_BUILD_<X>=1 names one op (through its builder's BUILD_VAR), DS_BUILD_OPS=1
every op DeepSpeed reports compatible that is not switched off with DS_BUILD_<X>=0. Each of them,
and every other op DeepSpeed's installed_ops lists, is loaded through its op builder with JIT
compilation blocked, from a file inside the deepspeed package. async_io also has to find libaio
and write a tensor to a file and read it back through an aio handle.
"""

# smoke-runner: own-interpreter (forked from the preload it hung in 2 of about 10 runs, in its async_io part or at its end: cause not found)

import os
import tempfile

from _smoke import context, deepspeed_import_hint, deepspeed_setup, finish, first_line, quiet_stdout

check, manifest = context()

# DeepSpeed prints its accelerator choice and build logs on stdout (some from C); the runner reads
# only the last line, but keep stdout to the one result line: send fd 1 to stderr until the end.
quiet_stdout()

# Load the ops for the accelerator they were compiled for (DeepSpeed >= 0.10 records it).
build_env = deepspeed_setup(manifest)

try:
    import deepspeed
    from deepspeed import git_version_info
    from deepspeed.accelerator import get_accelerator
    from deepspeed.ops.op_builder.all_ops import ALL_OPS
    from deepspeed.ops.op_builder.builder import OpBuilder
except Exception as exc:  # any import error is a broken installation
    finish("fail", "import deepspeed fails: {} ({})".format(first_line(exc), deepspeed_import_hint()))

version = deepspeed.__version__
try:
    major_minor = tuple(int(p) for p in version.split("+")[0].split(".")[:2])
except ValueError:
    major_minor = (0, 0)
package_dir = os.path.dirname(os.path.abspath(deepspeed.__file__))
installed_ops = dict(git_version_info.installed_ops)
compatible_ops = dict(getattr(git_version_info, "compatible_ops", {}) or {})
built_for = getattr(git_version_info, "accelerator_name", None)  # DeepSpeed >= 0.10 only
accelerator = get_accelerator()._name
accelerated = bool(manifest.get("accelerator"))  # built for a GPU accelerator, not DeepSpeed's cpu one


class JitBlocked(RuntimeError):
    pass


def no_jit(self, *args, **kwargs):
    raise JitBlocked("DeepSpeed would JIT-compile {} instead of loading a pre-built one".format(self.name))


OpBuilder.jit_load = no_jit  # the ops here must be pre-built: a JIT build is a failure, not a fallback

by_var = {}
for name, builder in ALL_OPS.items():
    by_var.setdefault(builder.BUILD_VAR, name)


def fix_for(name, error=""):
    if name == "async_io":
        if "libaio.so" in error:
            return "install libaio1 (libaio-dev brings it) in the image; the op needs it at run time"
        if "undefined symbol: io_" in error:
            # the .so has no NEEDED libaio: DeepSpeed >= 0.10's CPU op builder never passes the op's
            # extra_ldflags (-laio) to setuptools, and a plain LDFLAGS=-laio, which setuptools puts
            # before the objects, is dropped by the linker's --as-needed (Debian/Ubuntu gcc default)
            return ("async_io was linked without libaio: build DeepSpeed with libaio-dev installed, DS_BUILD_AIO=1 "
                    "and LDFLAGS='-Wl,--no-as-needed -laio'{}".format(
                        " (DS_ACCELERATOR=cpu alone does not link it: DeepSpeed's CPU op builder drops -laio)"
                        if major_minor >= (0, 10) and not accelerated else ""))
        fix = "install libaio-dev before DeepSpeed at build time and build with DS_BUILD_AIO=1"
        if major_minor >= (0, 10) and not accelerated:
            fix += ", DS_ACCELERATOR=cpu and LDFLAGS='-Wl,--no-as-needed -laio'"
        return fix
    if name == "cpu_adam":
        return "build with DS_BUILD_CPU_ADAM=1, with python3-dev and a C++ compiler in the image"
    builder = ALL_OPS.get(name)
    var = builder.BUILD_VAR if builder is not None else "DS_BUILD_<OP>"
    return "build DeepSpeed with {}=1 and the op's build dependencies present".format(var)


problems = []
notes = []
expected = set()
for var, value in sorted(build_env.items()):
    if not var.startswith("DS_BUILD_") or var == "DS_BUILD_OPS" or str(value) != "1":
        continue
    if var in by_var:
        expected.add(by_var[var])
    else:
        notes.append("{}=1 names no op of DeepSpeed {} for accelerator {}".format(var, version, accelerator))
if str(build_env.get("DS_BUILD_OPS", "")) == "1":
    for name, builder in ALL_OPS.items():
        if compatible_ops.get(name) and str(build_env.get(builder.BUILD_VAR, "")) != "0":
            expected.add(name)
expected.discard("deepspeed_not_implemented")
to_load = sorted(expected | {name for name, on in installed_ops.items() if on})
if not to_load:
    finish("fail", "DeepSpeed {} has no pre-built op and the manifest expects none; build it with "
                   "DS_BUILD_CPU_ADAM=1 (and DS_BUILD_AIO=1) so offload does not JIT-compile".format(version))

loaded = []
for name in to_load:
    if not installed_ops.get(name):
        problems.append("{} is not pre-built (installed_ops[{!r}] is {}): {}".format(
            name, name, installed_ops.get(name), fix_for(name)))
        continue
    if built_for is not None and built_for != accelerator:
        problems.append("{} was built for accelerator {} but DeepSpeed picked {} at runtime, so it would "
                        "be JIT-compiled: set DS_ACCELERATOR={}".format(name, built_for, accelerator, built_for))
        continue
    builder = ALL_OPS.get(name)
    if builder is None:
        problems.append("{} is pre-built but DeepSpeed {} has no builder for it with accelerator {}".format(
            name, version, accelerator))
        continue
    try:
        module = builder.load()
    except Exception as exc:  # ImportError (undefined symbol ...), version mismatch, JitBlocked
        problems.append("loading {} fails: {} ({})".format(name, first_line(exc), fix_for(name, str(exc))))
        continue
    where = os.path.abspath(getattr(module, "__file__", "") or "")
    if not where.startswith(package_dir + os.sep):
        problems.append("{} loaded from {}, not from the deepspeed package: {}".format(name, where, fix_for(name)))
        continue
    loaded.append(name)

aio_done = ""
if "async_io" in loaded:
    builder = ALL_OPS["async_io"]
    try:
        aio_compatible = builder.is_compatible(verbose=False)
    except TypeError:
        aio_compatible = builder.is_compatible()
    if not aio_compatible:
        problems.append("async_io loads but DeepSpeed finds no libaio (AsyncIOBuilder().is_compatible() is "
                        "False, so NVMe offload refuses it): install libaio-dev in the image")
    try:
        import torch

        aio = builder.load()
        count = 4096
        handle = aio.aio_handle(4096, 4, False, False, 1)  # block_size, queue_depth, single_submit, overlap, threads
        source = torch.arange(count, dtype=torch.float32) * 0.5 - 7
        # O_DIRECT needs aligned buffers: the handle's pinned allocator gives them. DeepSpeed 0.9
        # allocates num_elem * element_size elements, so take the first count of them.
        written = handle.new_cpu_locked_tensor(count, source)
        readback = handle.new_cpu_locked_tensor(count, source)
        w, r = written[:count], readback[:count]
        w.copy_(source)
        r.zero_()
        folder = tempfile.mkdtemp(prefix="smoke-aio-")
        path = os.path.join(folder, "tensor.bin")
        rc_write = handle.sync_pwrite(w, path)
        size = os.path.getsize(path) if os.path.exists(path) else -1
        rc_read = handle.sync_pread(r, path)
        same = torch.equal(r, source)
        handle.free_cpu_locked_tensor(written)
        handle.free_cpu_locked_tensor(readback)
        os.remove(path)
        os.rmdir(folder)
        if size != count * 4 or not same:
            problems.append("async_io round trip through {} failed: sync_pwrite returned {} and wrote {} of {} "
                            "bytes, sync_pread returned {}, data {} (the folder's filesystem must support "
                            "O_DIRECT; otherwise {})".format(folder, rc_write, size, count * 4, rc_read,
                                                              "matches" if same else "differs", fix_for("async_io")))
        else:
            aio_done = "; async_io wrote and read back {} bytes with O_DIRECT".format(size)
    except Exception as exc:
        problems.append("async_io round trip fails: {} ({})".format(first_line(exc), fix_for("async_io", str(exc))))

summary = "DeepSpeed {} (accelerator {})".format(version, accelerator)
# A CI run once timed out in this check and left no trace; the aio handle's worker threads, joined
# by its destructor at interpreter shutdown, are the likely place. Leave without shutdown once the
# result is out (the runner also keeps a result printed before a hang, as a warning).
if problems:
    finish("fail", "{}: {}".format(summary, "; ".join(problems + notes)), hard_exit=True)
detail = "{}: {} loaded from pre-built .so files (expected from the build env: {}){}".format(
    summary, ", ".join(loaded), ", ".join(sorted(expected)) or "none", aio_done)
if notes:
    finish("warn", detail + "; " + "; ".join(notes), hard_exit=True)
finish("pass", detail, hard_exit=True)
