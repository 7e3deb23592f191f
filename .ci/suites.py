"""Print the Debian suites whose slim images the shipped profiles build on, one a line (.ci/harness.sh makes
their stand-ins); .ci/run and .ci/propose bring up the same machine with it."""

from builder.profile.load import available_stacks, load_stack

suites = {t.base.release for s in available_stacks() for r in load_stack(s).releases.values()
          for t in r.targets.values() if t.base.distro == "debian"}
print("\n".join(sorted(suites)))
