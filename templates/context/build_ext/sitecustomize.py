"""Build a package's compiled extensions side by side, each in a build folder of its own.

A compiled step with `parallel_extensions: true` puts this folder on PYTHONPATH for its one
`pip install --no-build-isolation` (never in the image's environment), with the compile jobs the
build host affords in STACKBUILD_BUILD_JOBS. Python imports this file at start-up as
sitecustomize, in pip and in the build backend pip starts. It changes nothing until setuptools'
build_ext module is imported; then build_ext.build_extensions, which every build_ext subclass
reaches (torch's BuildExtension calls it once it has set up its compilers), gains two things:

- Each extension gets its own build folder: build_extension runs on a shallow copy of the command
  whose build_temp is <build_temp>/<extension name>. setuptools' `build_ext -j N` builds N
  extensions at once, in threads, all in one build_temp: torch's ninja backend writes one
  build.ninja there, which parallel extensions overwrite; and two extensions that compile the
  same sources with different flags (DeepSpeed's transformer_op and stochastic_transformer_op,
  the latter with -D__STOCHASTIC_MODE__) write the same object paths, so one can link the
  other's objects (seen: a stochastic_transformer_op without its PyInit). The copy is the
  thread's own, so nothing the threads share is written; the extensions' outputs are unchanged.
- The job budget is shared out: with E extensions and STACKBUILD_BUILD_JOBS = J,
  side = min(E, max(1, J // 4)) extensions build at once (an explicit `-j` wins), each running
  ninja with MAX_JOBS = max(1, J // side), so side * MAX_JOBS <= J compile jobs, J being what the
  host's cores and memory allow. Four jobs an extension: DeepSpeed's ops have 1 to 8 sources
  (most 1 or 2, the transformer ops 8), so fewer, wider extensions would leave ninja's slots idle
  on the small ops, and more, narrower ones would serialise the large ops' sources. The
  extensions start widest first (most sources), so a large op does not start last and end late.

Why this hook and not a build option: DeepSpeed's setup.py takes no option for parallel
extension builds (only DS_BUILD_* flags and DS_ENABLE_NINJA), setuptools' PEP 517 backend passes
pip's build options to bdist_wheel, not to build_ext, and the own folder per extension has to be
set inside build_ext anyway. pip stays as it was: the sdist comes hash-checked from the lock,
and the package is installed and recorded exactly as before.

A sitecustomize further along sys.path (Debian's, say) is still run, after this one.
Standard library only, Python 3.8+ (it runs on the image's own Python).
"""

import copy
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

BUDGET = "STACKBUILD_BUILD_JOBS"
JOBS_PER_EXTENSION = 4
# Where setuptools' build_ext base class lives: under both names (_distutils_hack maps the first
# onto setuptools' own copy; the second is that copy under its real name).
MODULES = ("distutils.command.build_ext", "setuptools._distutils.command.build_ext")


def share_jobs(jobs, extensions, asked=None):
    """(extensions built at once, MAX_JOBS of each) for a budget of ``jobs`` compile jobs.

    ``asked``: an explicit `build_ext -j N`, which sets how many run at once.
    """
    side = asked if asked else jobs // JOBS_PER_EXTENSION
    side = max(1, min(extensions, side))
    return side, max(1, jobs // side)


def budget():
    """STACKBUILD_BUILD_JOBS as a positive number, or None where it is unset or not one."""
    try:
        jobs = int(os.environ.get(BUDGET, ""))
    except ValueError:
        return None
    return jobs if jobs > 0 else None


def build_in_own_folder(method, command, ext):
    """Run ``method`` (a build_extension) on a copy of ``command`` that builds in <build_temp>/<ext.name>."""
    own = copy.copy(command)
    own.__dict__.pop("build_extension", None)
    own.build_temp = os.path.join(command.build_temp, ext.name)
    return method(own, ext)


def patch(build_ext):
    """Give ``build_ext`` (setuptools' base command class) own folders and the shared job budget."""
    if getattr(build_ext, "_stackbuild_own_folders", False):
        return
    original = build_ext.build_extensions

    def build_extensions(self):
        extensions = list(self.extensions or ())
        jobs = budget()
        if jobs is not None:
            asked = self.parallel if type(self.parallel) is int and self.parallel > 0 else None
            side, each = share_jobs(jobs, len(extensions), asked)
            self.parallel = side if side > 1 else None
            os.environ["MAX_JOBS"] = str(each)
            print("stackbuild: {} extension(s), {} at once, MAX_JOBS={} each ({}={})".format(
                len(extensions), side, each, BUDGET, jobs), flush=True)
        if self.parallel and all(hasattr(e, "sources") for e in extensions):
            self.extensions = sorted(extensions, key=lambda e: -len(e.sources or ()))
        # An attribute of this command object, found before the class's method, by the serial
        # and the threaded loop alike; type(self) is the most derived class (torch's, say).
        self.build_extension = functools.partial(build_in_own_folder, type(self).build_extension, self)
        try:
            return original(self)
        finally:
            del self.build_extension

    build_extensions.__doc__ = original.__doc__
    build_ext.build_extensions = build_extensions
    build_ext._stackbuild_own_folders = True


class _PatchAfterLoading(importlib.abc.Loader):
    """The module's own loader, then the patch, once the module has run."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        patch(module.build_ext)

    def __getattr__(self, name):  # get_source, get_filename, ... of the real loader
        return getattr(self.loader, name)


class _BuildExtFinder(importlib.abc.MetaPathFinder):
    """Finds build_ext's module as the other finders do, and patches it once it has loaded."""

    def find_spec(self, name, path, target=None):
        if name not in MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchAfterLoading(spec.loader)
                return spec
        return None


def install():
    """Patch build_ext now if it is loaded, else when it is."""
    for name in MODULES:
        if name in sys.modules:
            patch(sys.modules[name].build_ext)
    sys.meta_path.insert(0, _BuildExtFinder())


def run_next_sitecustomize():
    """Run the sitecustomize this file hides on sys.path, as Python would have."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


if __name__ == "sitecustomize":
    install()
    run_next_sitecustomize()
