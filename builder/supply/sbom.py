"""What is inside an image, as a CycloneDX 1.6 JSON document (cyclonedx-python-lib).

Read from the image itself, in a network-less container of it: every Debian package dpkg's
database records as installed (with the licences its DEP-5 copyright file names), every Python
distribution the image's ``python`` sees (what ``pip list`` shows, with the licence its metadata
gives), and the lock the image was installed from (``/opt/stackbuild/lock/``), whose sha256 hashes
become each locked package's hashes. The base image and its digest come from the image's
``io.stackbuild.base`` label.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

try:  # cyclonedx-python-lib 11.x moved it; the old place still works, with a warning
    from cyclonedx.contrib.license.factories import LicenseFactory
except ImportError:  # pragma: no cover - older releases
    from cyclonedx.factory.license import LicenseFactory

from .. import __version__
from ..plan import labels as schema
from ..engine.api import ContainerEngine, ImageEngine
from ..errors import SelectionError
from ..safety.printable import printable

INVENTORY_LIFETIME_S = 300

# Runs on the image's own Python (any 3.x); prints one JSON object. No network, nothing written.
INVENTORY = r'''
import glob, json, os, re, sys
from importlib import metadata
out = {"dpkg": [], "python": [], "locks": {}, "python_version": sys.version.split()[0]}
def licences(pkg):
    found = []
    try:
        with open("/usr/share/doc/%s/copyright" % pkg, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return found
    if not text.startswith("Format:"):
        return found
    for line in text.splitlines():
        if line.startswith("License:"):
            name = line[8:].strip()
            if name and name not in found:
                found.append(name)
    return found
try:
    with open("/var/lib/dpkg/status", encoding="utf-8", errors="replace") as f:
        paragraphs = f.read().split("\n\n")
except OSError:
    paragraphs = []
for para in paragraphs:
    fields = {}
    for line in para.splitlines():
        if line[:1] not in (" ", "\t") and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if fields.get("Package") and fields.get("Status", "").endswith(" installed"):
        out["dpkg"].append({"name": fields["Package"], "version": fields.get("Version", ""),
                            "arch": fields.get("Architecture", ""), "source": fields.get("Source", ""),
                            "licences": licences(fields["Package"])})
seen = set()
for dist in metadata.distributions():
    name = dist.metadata["Name"]
    if not name or name.lower() in seen:
        continue
    seen.add(name.lower())
    meta = dist.metadata
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    out["python"].append({"name": name, "version": dist.version, "expression": meta.get("License-Expression"),
                          "license": meta.get("License"), "classifiers": classifiers})
for path in sorted(glob.glob("/opt/stackbuild/lock/*.txt")):
    with open(path, encoding="utf-8") as f:
        out["locks"][os.path.basename(path)] = f.read()
print(json.dumps(out))
'''

LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Inventory:
    """What an image holds, as its own tools see it."""

    dpkg: list[dict] = field(default_factory=list)
    python: list[dict] = field(default_factory=list)
    locks: dict[str, str] = field(default_factory=dict)
    python_version: str = ""

    def locked_hashes(self) -> dict[str, list[str]]:
        """normalised name -> the sha256 hashes its lock sections give it."""
        hashes: dict[str, list[str]] = {}
        for text in self.locks.values():
            name = None
            for line in text.splitlines():
                match = LOCK_LINE.match(line.strip())
                if match:
                    name = normalise(match[1])
                    hashes.setdefault(name, [])
                if name:
                    hashes[name].extend(h for h in HASH.findall(line) if h not in hashes[name])
                if not line.rstrip().endswith("\\"):
                    name = None
        return hashes


def read_inventory(engine: ContainerEngine, image: str) -> Inventory:
    """Run the inventory script in a network-less container of ``image`` (removed afterwards)."""
    name = f"stackbuild-sbom-{uuid.uuid4().hex[:10]}"
    container = engine.start_container(image, name, {schema.SMOKE: "1"}, None, lifetime_s=INVENTORY_LIFETIME_S)
    try:
        lines, exit_code = engine.exec_lines(container, ["python", "-c", INVENTORY])
        text = "\n".join(lines)
        code = exit_code()
    finally:
        engine.remove_container(container)
    try:
        data = json.loads(text.strip().splitlines()[-1]) if code == 0 else None
    except (ValueError, IndexError):
        data = None
    if not isinstance(data, dict):
        raise SelectionError(f"cannot list what {image} holds: its `python` failed (exit {code}): "
                             f"{printable(text[-300:])}")
    return Inventory(data.get("dpkg", []), data.get("python", []), data.get("locks", {}),
                     data.get("python_version", ""))


def _licences(factory: LicenseFactory, names: list[str]) -> list:
    out = []
    for name in names:
        if name and len(name) <= 200 and "\n" not in name:
            try:
                out.append(factory.make_from_string(name))
            except Exception:  # noqa: BLE001 - an odd licence text is left out, never fatal
                continue
    # CycloneDX allows one expression, or any number of single licences, never both
    single = [item for item in out if not isinstance(item, LicenseExpression)]
    return single if len(out) > 1 and single else out[:1]


def _python_licences(factory: LicenseFactory, item: dict) -> list:
    if item.get("expression"):
        return _licences(factory, [item["expression"]])
    text = (item.get("license") or "").strip()
    if text and len(text) <= 100 and "\n" not in text and text.upper() != "UNKNOWN":
        return _licences(factory, [text])
    return _licences(factory, [c for c in item.get("classifiers") or [] if c != "OSI Approved"])


def _base_component(base: str | None) -> Component | None:
    if not base or "@" not in base:
        return None
    ref, digest = base.split("@", 1)
    repository, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    qualifiers = {"tag": tag} if tag else {}
    return Component(name=repository, version=digest, type=ComponentType.CONTAINER, bom_ref="base-image",
                     purl=PackageURL("docker", None, repository.rsplit("/", 1)[-1], digest, qualifiers),
                     properties=[Property(name="stackbuild:role", value="base image"),
                                 Property(name="stackbuild:reference", value=base)])


def make_sbom(image: str, image_id: str, labels: dict[str, str], inventory: Inventory) -> Bom:
    """The CycloneDX document of one image (its serial number derives from the image id)."""
    factory = LicenseFactory()
    hashes = inventory.locked_hashes()
    distro = next((f"debian-{v['version'].split('.')[0]}" for v in inventory.dpkg if v["name"] == "base-files"), None)
    components = []
    for item in sorted(inventory.python, key=lambda p: normalise(p["name"])):
        locked = hashes.get(normalise(item["name"]), [])
        components.append(Component(
            name=item["name"], version=item["version"], type=ComponentType.LIBRARY,
            purl=PackageURL("pypi", None, normalise(item["name"]), item["version"]),
            bom_ref=f"pypi:{normalise(item['name'])}@{item['version']}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=h) for h in locked],
            licenses=_python_licences(factory, item),
            properties=[Property(name="stackbuild:locked", value="true" if locked else "false")]))
    for item in sorted(inventory.dpkg, key=lambda p: (p["name"], p["arch"])):
        qualifiers = {"arch": item["arch"]} | ({"distro": distro} if distro else {})
        components.append(Component(
            name=item["name"], version=item["version"], type=ComponentType.LIBRARY,
            purl=PackageURL("deb", "debian", item["name"], item["version"], qualifiers),
            bom_ref=f"deb:{item['name']}:{item['arch']}@{item['version']}",
            licenses=_licences(factory, item.get("licences") or []),
            properties=[Property(name="stackbuild:source-package", value=item["source"])] if item.get("source") else []))
    base = _base_component(labels.get(schema.BASE))
    if base is not None:
        components.append(base)
    described = {k: v for k, v in labels.items() if k.startswith(schema.PREFIX) and k != schema.LOCK}
    subject = Component(name=image.split("@")[0], version=labels.get(schema.CONTENT_HASH) or image_id,
                        type=ComponentType.CONTAINER, bom_ref="image",
                        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=image_id.split(":")[-1])]
                        if image_id.startswith("sha256:") else [],
                        properties=[Property(name=k, value=v) for k, v in sorted(described.items())])
    metadata = BomMetaData(component=subject, properties=[
        Property(name="stackbuild:version", value=__version__),
        Property(name="stackbuild:python", value=inventory.python_version),
        Property(name="stackbuild:not-covered", value="files installed outside dpkg and Python packaging "
                 "(none by stackbuild's templates); Debian package hashes (dpkg keeps none)")])
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"stackbuild-sbom:{image_id}")
    bom = Bom(components=components, metadata=metadata, serial_number=serial)
    bom.register_dependency(subject, components)
    return bom


def sbom_json(engine: ImageEngine, containers: ContainerEngine, image: str) -> str:
    """The CycloneDX JSON of an image here (by name or id)."""
    info = engine.image(image)
    if info is None:
        raise SelectionError(f"image {image} is not on this engine (pull or build it first)")
    labels = dict((info.get("Config") or {}).get("Labels") or {})
    bom = make_sbom(image, info["Id"], labels, read_inventory(containers, image))
    return JsonV1Dot6(bom).output_as_string(indent=2)
