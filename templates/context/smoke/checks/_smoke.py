"""Shared by the checks: read the runner's arguments, print the one JSON result line, exit."""

import json
import sys


def context():
    """(this check's entry from the manifest, the whole manifest)."""
    data = json.loads(sys.argv[1])
    return data["check"], data["manifest"]


def report(status, detail):
    print(json.dumps({"status": status, "detail": detail}))
    sys.exit(0)


def gpu_count():
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
