"""/dev/shm is there, usable and large enough for NCCL and DataLoader workers (Docker's default is 64 MB).

Missing (a container with --ipc none) or unusable (read-only, full: no segment can be made, written
and read back from a second mapping, as a DataLoader worker's tensors are) fails; smaller than 1 GB
warns: the image is fine, the container needs --shm-size=16g or --ipc=host.
"""

import os

from _smoke import context, first_line, report

SEGMENT = 1 << 20  # 1 MB, as a batch a DataLoader worker hands over would use

context()
try:
    stat = os.statvfs("/dev/shm")
except OSError as exc:
    report("fail", "/dev/shm is missing: {} (run the container with --shm-size=16g or --ipc=host, not --ipc none)".format(
        exc))
size = stat.f_frsize * stat.f_blocks
try:
    from multiprocessing import shared_memory
    segment = shared_memory.SharedMemory(create=True, size=SEGMENT)
    try:
        segment.buf[:4] = b"smok"
        segment.buf[SEGMENT - 4:SEGMENT] = b"shm!"
        other = shared_memory.SharedMemory(name=segment.name)
        try:
            seen = bytes(other.buf[:4]) + bytes(other.buf[SEGMENT - 4:SEGMENT])
        finally:
            other.close()
    finally:
        segment.close()
        segment.unlink()
except (OSError, ValueError) as exc:
    report("fail", "/dev/shm ({} MB) cannot hold a shared memory segment: {} (NCCL and DataLoader workers need a "
                   "writable /dev/shm: run with --shm-size=16g or --ipc=host)".format(size >> 20, first_line(exc)))
if seen != b"smokshm!":
    report("fail", "a shared memory segment in /dev/shm read back {!r} from a second mapping (run with "
                   "--shm-size=16g or --ipc=host)".format(seen))
if size < 1 << 30:
    report("warn", "/dev/shm is {} MB; NCCL and DataLoader workers need more: run with --shm-size=16g "
                   "or --ipc=host".format(size >> 20))
report("pass", "/dev/shm is {} MB; a shared memory segment is written and read back".format(size >> 20))
