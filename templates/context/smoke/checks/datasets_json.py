"""datasets loads a local JSON-lines file offline, and .map runs on it.

2023 releases of datasets only put lower bounds on fsspec, huggingface-hub and pyarrow, so
installing one today pulls today's versions and load_dataset fails at run time ("Loading a
dataset cached in a LocalFileSystem is not supported" with fsspec >= 2023.9, "module 'pyarrow'
has no attribute 'PyExtensionType'" with pyarrow >= 21; datasets-fsspec-drift). This check writes
a small alpaca-style JSON-lines file, loads it with load_dataset("json", data_files=...,
cache_dir=<temporary>) offline, checks its rows, and maps a column onto it.
"""

# smoke-runner: preload datasets

import json
import os

from _smoke import context, finish, first_line, offline_hf, quiet_stdout

_, manifest = context()

TMP = offline_hf("smoke-datasets-")
quiet_stdout()


def installed(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


DEPS = ("datasets", "fsspec", "huggingface-hub", "pyarrow")
versions = ", ".join("{} {}".format(name, installed(name) or "missing") for name in DEPS)
pins = manifest.get("pins", {})
wanted = ["{}=={}".format(name, pins[name]) for name in DEPS[1:] if name in pins]


def version_tuple(text):
    parts = []
    for part in (text or "0").split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


# seen: datasets 2.11.0 loads local files with fsspec up to 2023.9.2 and fails from 2023.10.0
DRIFT = ""
if version_tuple(installed("datasets")) < (2, 15) and version_tuple(installed("fsspec")) >= (2023, 10):
    DRIFT = "fsspec {} is newer than datasets {} can use; ".format(installed("fsspec"), installed("datasets"))
FIX = DRIFT + ("pin fsspec, huggingface-hub and pyarrow of datasets' own time ({}) (datasets-fsspec-drift)".format(
    "the release pins " + ", ".join(wanted) if wanted else
    "e.g. fsspec==2023.4.0, huggingface-hub==0.14.1, pyarrow==12.0.1 with datasets 2.11; fsspec<2023.9 with "
    "datasets 2.14"))

try:
    import datasets
    from datasets import load_dataset
except Exception as exc:
    finish("fail", "import datasets failed: {} ({}): {}".format(first_line(exc), versions, FIX))
try:
    datasets.disable_progress_bar()
except Exception:
    pass

rows = [{"instruction": "Give a synonym for {}.".format(word), "input": "", "output": answer}
        for word, answer in (("big", "large"), ("fast", "quick"), ("happy", "glad"), ("small", "tiny"),
                             ("smart", "clever"))]
data_file = os.path.join(TMP, "data.jsonl")
with open(data_file, "w", encoding="utf-8") as handle:
    for row in rows:
        handle.write(json.dumps(row) + "\n")

try:
    loaded = load_dataset("json", data_files=data_file, cache_dir=os.path.join(TMP, "cache"))
except Exception as exc:
    finish("fail", "load_dataset('json', data_files=<local file>) failed: {} ({}): {}".format(
        first_line(exc), versions, FIX))
try:
    train = loaded["train"]
    got = [dict(r) for r in train]
except Exception as exc:
    finish("fail", "reading the loaded dataset failed: {} ({}): {}".format(first_line(exc), versions, FIX))
if got != rows:
    finish("fail", "load_dataset('json') read {} rows that differ from the {} written (first: {!r}) ({}): {}".format(
        len(got), len(rows), got[:1], versions, FIX))

try:
    mapped = train.map(lambda row: {"text": "{} -> {}".format(row["instruction"], row["output"])})
    texts = list(mapped["text"])
except Exception as exc:
    finish("fail", "Dataset.map failed: {} ({}): {}".format(first_line(exc), versions, FIX))
if texts != ["{} -> {}".format(r["instruction"], r["output"]) for r in rows]:
    finish("fail", "Dataset.map produced wrong rows (first: {!r}) ({}): {}".format(texts[:1], versions, FIX))
finish("pass", "load_dataset('json') read {} rows offline and .map ran ({})".format(len(rows), versions))
