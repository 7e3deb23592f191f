"""pip's own consistency check: every installed package's requirements are met."""

import subprocess
import sys

from _smoke import context, report

context()
proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
if proc.returncode != 0:
    lines = [line for line in proc.stdout.splitlines() if line.strip()][:5]
    report("fail", "pip check: " + "; ".join(lines) + " (pin the conflicting packages in the profile)")
report("pass", "no broken requirements")
