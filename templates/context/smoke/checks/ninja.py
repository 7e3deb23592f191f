"""ninja is there for PyTorch's C++ extension builds (DeepSpeed's JIT ops), at its pinned version.

torch.utils.cpp_extension must find it (is_ninja_available / verify_ninja_availability run
`ninja --version` from PATH), and the binary it finds must be the pinned one: the ninja
distribution installed at the pin and `ninja --version` reporting that version.
"""

# smoke-runner: preload torch

import re
import shutil
import subprocess

from _smoke import context, report

check, manifest = context()
pin = (manifest.get("pins") or {}).get("ninja")
fix = "pip install ninja=={}".format(pin) if pin else "pip install ninja"

try:
    from torch.utils import cpp_extension
except Exception as exc:
    report("fail", "import torch.utils.cpp_extension fails: {}: {} (rebuild the image)".format(type(exc).__name__, exc))
try:
    cpp_extension.verify_ninja_availability()
    available = cpp_extension.is_ninja_available()
except Exception as exc:  # RuntimeError("Ninja is required to load C++ extensions")
    available = False
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
else:
    reason = "is_ninja_available() is False"
path = shutil.which("ninja")
if not available or path is None:
    report("fail", "PyTorch finds no ninja ({}; on PATH: {}), so DeepSpeed cannot JIT-compile an op that is not "
                   "pre-built: {}".format(reason, path, fix))
try:
    output = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=30).stdout.strip()
except (OSError, subprocess.SubprocessError) as exc:
    report("fail", "{} --version fails: {} ({})".format(path, exc, fix))
# The PyPI wheel's binary says e.g. "1.13.0.git.kitware.jobserver-pipe-1" for ninja==1.13.0.
match = re.match(r"\d+(\.\d+)*", output)
binary = match.group(0) if match else output
if pin is None:
    report("pass", "ninja {} at {} (PyTorch finds it; ninja is not pinned)".format(output, path))

try:
    import importlib.metadata as md
    try:
        installed = md.version("ninja")
    except md.PackageNotFoundError:
        installed = None
except ImportError:
    installed = None
if installed is not None and installed != pin:
    report("fail", "ninja=={} is installed, the release pins {}: {}".format(installed, pin, fix))
pin_parts, binary_parts = pin.split("."), binary.split(".")
if binary_parts[:len(pin_parts)] != pin_parts and pin_parts[:len(binary_parts)] != binary_parts:
    report("fail", "`ninja --version` at {} says {}, the release pins ninja {} (another ninja comes first on "
                   "PATH?): {}".format(path, output, pin, fix))
if installed is None:
    report("warn", "{} says {} as pinned, but no ninja Python distribution is installed ({} to have pip "
                   "manage it)".format(path, output, fix))
report("pass", "ninja {} at {} (`ninja --version`: {}); PyTorch finds it".format(installed, path, output))
