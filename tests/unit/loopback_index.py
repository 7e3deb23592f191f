"""A package index on loopback for locking tests: PEP 691 JSON pages with upload times (PEP 700),
tiny wheels made here, and files that can be added while it runs (the index's view of a past date
grows, as PyPI's was seen to). Nothing leaves 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import re
import threading
import zipfile
from dataclasses import dataclass


def wheel(name: str, version: str, requires: tuple[str, ...] = ()) -> tuple[str, bytes, bytes]:
    """(file name, wheel bytes, METADATA bytes) of a pure-Python wheel with nothing but metadata."""
    dist = f"{name.replace('-', '_')}-{version}"
    extras = sorted({m.group(1) for r in requires for m in [re.search(r"extra == \"([a-z0-9-]+)\"", r)] if m})
    metadata = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                        *(f"Provides-Extra: {e}\n" for e in extras),
                        *(f"Requires-Dist: {r}\n" for r in requires)]).encode()
    files = {f"{dist}.dist-info/METADATA": metadata,
             f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{path},,\n" for path in files) + f"{dist}.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in {**files, f"{dist}.dist-info/RECORD": record.encode()}.items():
            archive.writestr(zipfile.ZipInfo(path, (2026, 1, 1, 0, 0, 0)), data)
    return f"{dist}-py3-none-any.whl", buffer.getvalue(), metadata


@dataclass
class Release:
    name: str
    version: str
    uploaded: str  # ISO date-time, Z
    filename: str
    data: bytes
    metadata: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class LoopbackIndex:
    """``add`` releases, even while uv reads the index; ``url`` is the simple index's root."""

    def __init__(self) -> None:
        self.releases: dict[str, list[Release]] = {}
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                parts = self.path.strip("/").split("/")
                if len(parts) == 2 and parts[0] == "simple" and parts[1] in index.releases:
                    self._send(json.dumps(index.page(parts[1])).encode(), "application/vnd.pypi.simple.v1+json")
                    return
                if len(parts) == 2 and parts[0] == "files":
                    for release in (r for rs in index.releases.values() for r in rs):
                        if parts[1] == release.filename:
                            return self._send(release.data, "application/octet-stream")
                        if parts[1] == release.filename + ".metadata":
                            return self._send(release.metadata, "application/octet-stream")
                self.send_error(404)

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def url(self) -> str:
        return f"{self.root}/simple"

    def add(self, name: str, version: str, uploaded: str, requires: tuple[str, ...] = ()) -> Release:
        filename, data, metadata = wheel(name, version, requires)
        release = Release(name, version, uploaded, filename, data, metadata)
        self.releases.setdefault(name, []).append(release)
        return release

    def page(self, name: str) -> dict:
        files = [{"filename": r.filename, "url": f"{self.root}/files/{r.filename}", "hashes": {"sha256": r.sha256},
                  "upload-time": r.uploaded, "requires-python": None,
                  "core-metadata": {"sha256": hashlib.sha256(r.metadata).hexdigest()}}
                 for r in self.releases[name]]
        return {"meta": {"api-version": "1.1"}, "name": name, "files": files,
                "versions": sorted({r.version for r in self.releases[name]})}

    def __enter__(self) -> LoopbackIndex:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
