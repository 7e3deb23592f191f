"""The build_ext hook a parallel compiled step runs with (templates/context/build_ext/sitecustomize.py).

The project built here has two C extensions made from one source file with different defines,
as DeepSpeed's transformer_op and stochastic_transformer_op are: in one build folder their
objects have the same path. A compiler wrapper makes the two compiles take turns so that, without
the hook, the second one's object replaces the first's before the first links: always, not only
when the threads happen to interleave so.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from builder.safety.paths import templates_dir

HOOK = templates_dir() / "context" / "build_ext"

SOURCE = r"""
#include <Python.h>
#define NAME_(x) #x
#define NAME(x) NAME_(x)
#define INIT_(x) PyInit_##x
#define INIT(x) INIT_(x)
static PyObject *which(PyObject *self, PyObject *unused) { return PyLong_FromLong(WHICH); }
static PyMethodDef methods[] = {{"which", which, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, NAME(MODULE), NULL, -1, methods};
PyMODINIT_FUNC INIT(MODULE)(void) { return PyModule_Create(&module); }
"""

SETUP = textwrap.dedent("""
    from setuptools import Extension, setup

    def ext(name, which):
        return Extension(name, ["shared.c"], define_macros=[("MODULE", name), ("WHICH", which)])

    setup(name="twins", version="1", ext_modules=[ext("first", "1"), ext("second", "2")])
""")

# The two compiles take turns (marker files in $MARKS): the first compiles, then waits until the
# second has compiled too before it returns and its extension links. Sharing one folder, the
# second's object has replaced the first's by then.
TAKING_TURNS_CC = textwrap.dedent("""\
    #!/bin/sh
    case " $* " in *" -c "*) ;; *) exec "$REAL_CC" "$@" ;; esac
    wait_for() { n=0; while [ ! -e "$MARKS/$1" ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done; }
    case " $* " in
        *-DWHICH=1*) "$REAL_CC" "$@" || exit $?; touch "$MARKS/first"; wait_for second ;;
        *) wait_for first; "$REAL_CC" "$@" || exit $?; touch "$MARKS/second" ;;
    esac
""")


def load_hook():
    spec = importlib.util.spec_from_file_location("stackbuild_build_ext_hook", HOOK / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not as "sitecustomize": nothing is installed
    return module


@pytest.mark.parametrize(("jobs", "extensions", "asked", "expected"), [
    (32, 13, None, (8, 4)),   # a 32-core H200 host, DeepSpeed's cuda op set
    (2, 3, None, (1, 2)),     # 2 cores, the cpu op set: one at a time, ninja gets both
    (7, 3, None, (1, 7)),
    (8, 3, None, (2, 4)),
    (64, 3, None, (3, 21)),   # never more at once than there are extensions
    (32, 0, None, (1, 32)),
    (1, 13, None, (1, 1)),
    (32, 13, 16, (13, 2)),    # an explicit -j decides how many at once, the budget still holds
    (4, 13, 8, (8, 1)),
])
def test_job_budget_is_shared_between_extensions(jobs, extensions, asked, expected):
    side, each = load_hook().share_jobs(jobs, extensions, asked)
    assert (side, each) == expected
    assert side * each <= max(jobs, side)


def test_budget_reads_only_a_positive_number(monkeypatch):
    hook = load_hook()
    for value, expected in (("12", 12), ("0", None), ("-3", None), ("many", None), ("", None)):
        monkeypatch.setenv(hook.BUDGET, value)
        assert hook.budget() == expected
    monkeypatch.delenv(hook.BUDGET)
    assert hook.budget() is None


def _compiler() -> str | None:
    include = sysconfig.get_paths()["include"]
    cc = shutil.which("cc") or shutil.which("gcc")
    return cc if cc and os.path.exists(os.path.join(include, "Python.h")) else None


def _build(tmp_path: Path, name: str, hook: bool, env_extra: dict[str, str] | None = None):
    project = tmp_path / name
    project.mkdir()
    (project / "shared.c").write_text(SOURCE)
    (project / "setup.py").write_text(SETUP)
    turns = project / "taking-turns-cc"
    turns.write_text(TAKING_TURNS_CC)
    turns.chmod(0o755)
    (project / "marks").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STACKBUILD_BUILD_JOBS", "MAX_JOBS")}
    env.update(CC=str(turns), REAL_CC=_compiler(), LDSHARED=f"{_compiler()} -shared", MARKS=str(project / "marks"),
               **(env_extra or {}))
    if hook:
        env["PYTHONPATH"] = str(HOOK)
    lib = project / "lib"
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "-j", "2", "-b", str(lib)],
                           cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib\nfor name in ('first', 'second'):\n"
         "    try:\n        print(name, importlib.import_module(name).which())\n"
         "    except ImportError as exc:\n        print(name, 'ImportError', exc)"],
        cwd=lib, env={k: v for k, v in env.items() if k != "PYTHONPATH"}, capture_output=True, text=True, timeout=60)
    return probe.stdout.split("\n")[:2], build.stdout + build.stderr, project


@pytest.mark.skipif(_compiler() is None, reason="needs a C compiler and Python's headers")
def test_without_the_hook_parallel_extensions_link_each_others_objects(tmp_path):
    lines, _, _ = _build(tmp_path, "plain", hook=False)
    # the first extension linked the second's object: no PyInit_first in it
    assert lines[0].startswith("first ImportError") and "PyInit_first" in lines[0], lines
    assert lines[1] == "second 2"


@pytest.mark.skipif(_compiler() is None, reason="needs a C compiler and Python's headers")
def test_with_the_hook_each_extension_builds_in_its_own_folder(tmp_path):
    lines, log, project = _build(tmp_path, "hooked", hook=True, env_extra={"STACKBUILD_BUILD_JOBS": "8"})
    assert lines == ["first 1", "second 2"]
    assert "stackbuild: 2 extension(s), 2 at once, MAX_JOBS=4 each (STACKBUILD_BUILD_JOBS=8)" in log
    temp = next((project / "build").glob("temp.*"))
    assert sorted(p.name for p in temp.iterdir()) == ["first", "second"]
    assert (temp / "first" / "shared.o").exists() and (temp / "second" / "shared.o").exists()


def test_the_sitecustomize_it_hides_still_runs(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import sys\nsys.stackbuild_seen_other = True\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HOOK), str(other)]))
    probe = subprocess.run([sys.executable, "-c", "import sys, sitecustomize\n"
                            "print(sitecustomize.__file__, getattr(sys, 'stackbuild_seen_other', False))"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert probe.stdout.split() == [str(HOOK / "sitecustomize.py"), "True"], probe.stderr
