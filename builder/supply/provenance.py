"""An in-toto statement with a SLSA v1 provenance predicate: what an image was built from, and how.

Everything in it is a fact stackbuild holds: the rendered Dockerfile's sha256, the base image's
digest, the lock's sha256, the profile's source revision (its git commit when the profile is in a
git checkout — with ``dirty`` when the file differs from it — else the profile file's sha256), the
engine and builder that built it (the image's labels) and stackbuild's version. It is wrapped in a
DSSE envelope, signed with the signing key when there is one (as `cosign attest` would), and
attached beside the image under ``sha256-<hex>.att``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from .. import __version__
from ..plan import labels as schema
from ..plan.build_plan import lock_path
from ..render.dockerfile import BuildContext
from ..images.signing import sign_bytes, verifies

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:stackbuild:buildtype:image:v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def profile_revision(path: Path) -> dict:
    """The profile's git commit (and whether the file differs from it), else its sha256."""
    facts: dict = {"uri": f"file:{path.name}", "digest": {"sha256": _sha256(path.read_bytes())}}
    try:
        top = subprocess.run(["git", "-C", str(path.parent), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=20)
        if top.returncode == 0:
            root, commit = top.stdout.split()[:2]
            status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", str(path)],
                                    capture_output=True, text=True, timeout=20)
            facts["uri"] = f"git:{path.resolve().relative_to(Path(root).resolve())}"
            facts["digest"]["gitCommit"] = commit
            facts["annotations"] = {"dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return facts


def statement(context: BuildContext, name: str, digest: str, labels: dict[str, str]) -> dict:
    """The provenance statement of the image ``name`` (a repository) at manifest ``digest``."""
    plan = context.plan
    dependencies = []
    base = labels.get(schema.BASE) or ""
    if "@" in base:
        ref, base_digest = base.split("@", 1)
        dependencies.append({"uri": f"docker:{ref}", "digest": {base_digest.split(":")[0]: base_digest.split(":")[-1]},
                             "annotations": {"role": "base image"}})
    if plan.lock is not None:
        lock = lock_path(plan)
        dependencies.append({"uri": f"file:{lock.name}", "digest": {"sha256": _sha256(lock.read_bytes())},
                             "annotations": {"role": "lock"}})
    dependencies.append({**profile_revision(plan.stack.path), "name": "profile"})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest.split(":")[-1]}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"stack": plan.stack.name, "release": plan.release.name,
                                       "target": plan.target.name, "options": list(plan.options)},
                "internalParameters": {"contentHash": labels.get(schema.CONTENT_HASH),
                                       "buildHostCpu": labels.get(schema.BUILD_HOST_CPU)},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": f"urn:stackbuild:{__version__}",
                            "version": {"stackbuild": __version__,
                                        "engine": labels.get(schema.BUILD_ENGINE) or "not recorded (built "
                                        "before stackbuild labelled its engine)"}},
                "byproducts": [{"name": "Dockerfile", "digest": {"sha256": _sha256(context.dockerfile.encode())}}],
            },
        },
    }


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding, what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def envelope(body: dict, key: ec.EllipticCurvePrivateKey | None) -> bytes:
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    signatures = [{"keyid": "", "sig": sign_bytes(key, pae(PAYLOAD_TYPE, payload))}] if key else []
    return json.dumps({"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
                       "signatures": signatures}, separators=(",", ":")).encode()


def open_envelope(data: bytes, keys: list[tuple[str, ec.EllipticCurvePublicKey]]) -> tuple[dict, str | None]:
    """(the statement, the key file that verified it or None) of a DSSE envelope."""
    outer = json.loads(data)
    payload = base64.b64decode(outer["payload"])
    signed_by = None
    for signature in outer.get("signatures") or []:
        for key_name, key in keys:
            if verifies(key, pae(outer["payloadType"], payload), signature.get("sig", "")):
                signed_by = key_name
    return json.loads(payload), signed_by
