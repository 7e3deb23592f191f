"""Shared by the checks: read the runner's arguments, print the one JSON result line, exit.

Importing this module has no side effects (checks that spawn processes import it in the
children too): stdout is only redirected by quiet_stdout(), temporary folders only made by
offline_hf(), and both are undone by finish().
"""

import json
import os
import re
import shutil
import sys
import tempfile

_saved_stdout = None  # a duplicate of the real fd 1 while quiet_stdout() is in effect
_temp_dirs = []  # removed by finish()


def context():
    """(this check's entry from the manifest, the whole manifest).

    Also installs the last resort: an exception no check handled still ends in one fail line.
    """
    sys.excepthook = _last_resort
    data = json.loads(sys.argv[1])
    return data["check"], data["manifest"]


def _last_resort(kind, exc, tb):
    """An exception the check did not handle: its traceback to stderr, one fail line to stdout.

    Every check catches what its imports and its work can raise and names the fix; this is for
    what none foresaw, so that a crash is still one result and not a bare traceback.
    """
    import traceback
    traceback.print_exception(kind, exc, tb)
    frames = traceback.extract_tb(tb) if tb is not None else []
    _restore()
    # no sys.exit here: an exit raised inside sys.excepthook is reported as an error in the hook
    print(json.dumps({"status": "fail", "detail": "the check raised {}{} (a defect of this check or a broken "
                      "package: its traceback is on stderr; rebuild the image, and report it if it persists)".format(
                          first_line(exc), " at {}:{}".format(os.path.basename(frames[-1].filename),
                                                              frames[-1].lineno) if frames else "")}))
    sys.stdout.flush()


def report(status, detail):
    print(json.dumps({"status": status, "detail": detail}))
    sys.exit(0)


def gpu_count():
    """The GPUs torch sees: 0 without torch; a torch that is there but does not import is a fail."""
    try:
        import torch
    except ModuleNotFoundError as exc:
        if (exc.name or "torch").split(".")[0] != "torch":
            finish("fail", "import torch fails: {} (rebuild the image: torch's requirements must be installed)".format(
                first_line(exc)))
        return 0
    except Exception as exc:  # an undefined symbol, a missing CUDA library: a broken torch
        finish("fail", "import torch fails: {} (rebuild the image: torch must import to find the GPUs)".format(
            first_line(exc)))
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception as exc:
        finish("fail", "torch {} cannot count the GPUs: {} (install the NVIDIA driver and container toolkit on the "
                       "host, or use a torch build for its CUDA)".format(torch.__version__, first_line(exc)))


def quiet_stdout():
    """Send fd 1 to stderr until finish(), keeping stdout for the one result line.

    Libraries print banners and build logs on stdout, some from C (bitsandbytes' CUDA SETUP,
    DeepSpeed's accelerator choice, sentencepiece's trainer), so sys.stdout alone is not enough.
    """
    global _saved_stdout
    if _saved_stdout is not None:
        return
    sys.stdout.flush()
    _saved_stdout = os.dup(1)
    os.dup2(2, 1)


def _restore():
    """Undo quiet_stdout() and remove offline_hf()'s folders."""
    global _saved_stdout
    sys.stdout.flush()
    if _saved_stdout is not None:
        os.dup2(_saved_stdout, 1)
        os.close(_saved_stdout)
        _saved_stdout = None
    while _temp_dirs:
        shutil.rmtree(_temp_dirs.pop(), ignore_errors=True)


def finish(status, detail, hard_exit=False):
    """Restore stdout if quiet_stdout() took it, remove offline_hf()'s folder, then report().

    ``hard_exit`` leaves with os._exit once the result is printed, skipping interpreter shutdown:
    for checks whose native libraries keep threads that may not join at exit.
    """
    _restore()
    if hard_exit:
        print(json.dumps({"status": status, "detail": detail}))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    report(status, detail)


def first_line(exc):
    """"<ExceptionType>: <first non-blank line of its message, at most 300 characters>"."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "{}: {}".format(type(exc).__name__, lines[0][:300] if lines else "")


def offline_hf(prefix):
    """Make Hugging Face libraries work offline with every cache in a new temporary folder.

    Returns the folder (made with tempfile.mkdtemp(prefix=prefix)); finish() removes it.
    """
    tmp = tempfile.mkdtemp(prefix=prefix)
    _temp_dirs.append(tmp)
    os.environ.update({
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": os.path.join(tmp, "hf"),
        "TRANSFORMERS_CACHE": os.path.join(tmp, "hf", "hub"),
        "HF_DATASETS_CACHE": os.path.join(tmp, "datasets"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    })
    return tmp


def _major_minor(version):
    """(major, minor) from the leading digits of a version's first two parts, or None."""
    parts = [re.match(r"\d*", part).group() for part in str(version).split("+")[0].split(".")[:2]]
    if len(parts) < 2 or not all(parts):
        return None
    return int(parts[0]), int(parts[1])


def deepspeed_pydantic_conflict(pins=None):
    """'deepspeed X needs pydantic<2 ...' when deepspeed < 0.10 meets pydantic >= 2, else ''.

    pins: the manifest's pins, to name the release's pydantic pin in the fix.
    """
    try:
        import importlib.metadata as md
        ds, pyd = md.version("deepspeed"), md.version("pydantic")
    except Exception:  # Python < 3.8, or either one not installed
        return ""
    ds_v, pyd_v = _major_minor(ds), _major_minor(pyd)
    if ds_v is None or pyd_v is None or ds_v >= (0, 10) or pyd_v < (2, 0):
        return ""
    pin = (pins or {}).get("pydantic")
    return "deepspeed {} needs pydantic<2 but pydantic {} is installed: pip install 'pydantic<2'{}".format(
        ds, pyd, " (the release pins pydantic=={})".format(pin) if pin else "")


def deepspeed_import_hint(pins=None):
    """Why deepspeed may not import: deepspeed < 0.10 with pydantic 2, or else a broken install."""
    return deepspeed_pydantic_conflict(pins) or "rebuild the image; deepspeed and its requirements must import"


def deepspeed_setup(manifest, accelerator=None):
    """Prepare this process to import DeepSpeed the way the image built it; return its build env.

    DS_ACCELERATOR becomes ``accelerator`` or else the one the ops were compiled for (DeepSpeed
    JIT-builds ops compiled for another), unless the environment names one; anything that still
    tries a JIT build writes to a throwaway folder (removed by finish()), never ~/.cache.
    """
    build_env = {}
    for entry in manifest.get("compiled") or []:
        if entry.get("package") == "deepspeed":
            build_env = dict(entry.get("env") or {})
    chosen = accelerator or build_env.get("DS_ACCELERATOR")
    if chosen and not os.environ.get("DS_ACCELERATOR"):
        os.environ["DS_ACCELERATOR"] = chosen
    extensions = tempfile.mkdtemp(prefix="smoke-torch-ext-")
    _temp_dirs.append(extensions)
    os.environ["TORCH_EXTENSIONS_DIR"] = extensions
    return build_env
