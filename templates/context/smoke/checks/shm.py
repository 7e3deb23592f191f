"""/dev/shm is large enough for NCCL and DataLoader workers (Docker's default is 64 MB)."""

import os

from _smoke import context, report

context()
try:
    stat = os.statvfs("/dev/shm")
except OSError as exc:
    report("fail", "/dev/shm is missing: {}".format(exc))
size = stat.f_frsize * stat.f_blocks
if size < 1 << 30:
    report("warn", "/dev/shm is {} MB; NCCL and DataLoader workers need more: run with --shm-size=16g "
                   "or --ipc=host".format(size >> 20))
report("pass", "/dev/shm is {} MB".format(size >> 20))
