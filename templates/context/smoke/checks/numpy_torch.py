"""numpy arrays and torch tensors convert both ways (torch < 2.3 breaks with NumPy 2).

torch older than 2.3 was compiled against the NumPy 1.x ABI: with NumPy 2 its import only warns
("A module that was compiled using NumPy 1.x cannot be run in NumPy 2...") and every conversion
then fails with "RuntimeError: Numpy is not available" (numpy2-old-torch). This check fails on
that warning or on any failed or wrong conversion: torch.from_numpy (shared memory),
torch.tensor(array), tensor.numpy() and a DataLoader-style collate of numpy arrays.
"""

# smoke-runner: own-interpreter (it watches what torch prints while it is imported)

import io
import sys

from _smoke import context, first_line, report

_, manifest = context()


def version_tuple(text):
    parts = []
    for part in text.split("+")[0].split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


try:
    import numpy as np
except Exception as exc:
    report("fail", "import numpy failed: {} (install the release's numpy pin)".format(first_line(exc)))

# numpy 2 reports an extension built for NumPy 1.x on sys.stderr (at torch's import or first conversion).
captured = io.StringIO()
real_stderr = sys.stderr
sys.stderr = captured
try:
    import torch
    import_error = None
except Exception as exc:  # numpy 2 can also make the import itself fail
    import_error = exc
finally:
    sys.stderr = real_stderr

tv = torch.__version__ if import_error is None else "?"
nv = np.__version__
pinned = manifest.get("pins", {}).get("numpy")
if import_error is None and version_tuple(tv) < (2, 3):
    fix = ("torch {} was built against NumPy 1.x: pin numpy<2 ({}) with it, or upgrade to torch>=2.3 "
           "(numpy2-old-torch)".format(tv, "numpy=={}".format(pinned) if pinned and not pinned.startswith("2")
                                       else "numpy==1.24.4"))
else:
    fix = "install the numpy the release pins{} with torch {}".format(
        " (numpy=={})".format(pinned) if pinned else "", tv)

if import_error is not None:
    real_stderr.write(captured.getvalue())
    report("fail", "import torch failed with numpy {}: {} ({})".format(nv, first_line(import_error), fix))

problems = []
sys.stderr = captured  # torch may initialise numpy only at the first conversion: catch its warning there too
try:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensor = torch.from_numpy(array)
    if tensor.dtype != torch.float32 or tensor.tolist() != array.tolist():
        problems.append("torch.from_numpy gave {} {}".format(tensor.dtype, tensor.tolist()))
    array[0, 0] = 100.0  # from_numpy shares memory with the array
    if tensor[0, 0].item() != 100.0:
        problems.append("torch.from_numpy does not share memory with the array")
    back = (torch.arange(6, dtype=torch.int64) * 3).numpy()
    if back.dtype != np.int64 or back.tolist() != [0, 3, 6, 9, 12, 15]:
        problems.append("tensor.numpy() gave {} {}".format(back.dtype, back.tolist()))
    copied = torch.tensor(np.array([[1.5, 2.5], [3.5, 4.5]]))
    if copied.dtype != torch.float64 or copied.sum().item() != 12.0:
        problems.append("torch.tensor(ndarray) gave {} {}".format(copied.dtype, copied.tolist()))
    from torch.utils.data import default_collate
    batch = default_collate([np.ones(3, dtype=np.int32), np.zeros(3, dtype=np.int32)])
    if batch.shape != (2, 3) or batch.dtype != torch.int32 or batch.sum().item() != 3:
        problems.append("default_collate of numpy arrays gave {} {}".format(batch.dtype, tuple(batch.shape)))
except ImportError:
    pass  # default_collate is public from torch 1.11; older torch is no stack's
except Exception as exc:
    problems.append("converting between numpy and torch raised {}".format(first_line(exc)))
finally:
    sys.stderr = real_stderr
    real_stderr.write(captured.getvalue())
noise = captured.getvalue()
if "compiled using NumPy 1.x" in noise or "_ARRAY_API not found" in noise:
    problems.insert(0, "numpy warns that a module compiled using NumPy 1.x cannot run on NumPy {}".format(nv))
if problems:
    report("fail", "torch {} with numpy {}: {}: {}".format(tv, nv, "; ".join(problems), fix))
report("pass", "torch {} and numpy {} convert arrays and tensors both ways (from_numpy shares memory)".format(tv, nv))
