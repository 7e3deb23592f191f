"""A loopback stand-in for a registry's v2 API: what builder/images/oci.py uses (manifests and blobs by tag or
digest, monolithic blob uploads), kept in memory. Unit tests point builder.images.oci at it."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ROUTE = re.compile(r"^/v2/(?P<path>.+?)/(?P<kind>manifests|blobs|blobs/uploads)/(?P<ref>[^/]*)$")


class FakeRegistry:
    def __init__(self):
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}  # (repository path, tag or digest)
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _route(self):
                url = urlsplit(self.path)
                registry.requests.append((self.command, url.path))
                match = ROUTE.match(url.path)
                return match, parse_qs(url.query)

            def do_GET(self):
                match, _ = self._route()
                if not match:
                    return self._answer(404)
                path, kind, ref = match["path"], match["kind"], match["ref"]
                if kind == "manifests" and (path, ref) in registry.manifests:
                    media_type, body = registry.manifests[path, ref]
                    return self._answer(200, body, {"Content-Type": media_type,
                                                    "Docker-Content-Digest": digest_of(body)})
                if kind == "blobs" and ref in registry.blobs:
                    return self._answer(200, registry.blobs[ref])
                return self._answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')

            do_HEAD = do_GET

            def do_POST(self):
                match, _ = self._route()
                if not match or match["kind"] != "blobs/uploads":
                    return self._answer(404)
                return self._answer(202, b"", {"Location": f"/v2/{match['path']}/blobs/uploads/{uuid.uuid4().hex}"})

            def do_PUT(self):
                match, query = self._route()
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not match:
                    return self._answer(404)
                if match["kind"] == "blobs/uploads":
                    digest = query["digest"][0]
                    if digest_of(data) != digest:
                        return self._answer(400, b'{"errors":[{"code":"DIGEST_INVALID"}]}')
                    registry.blobs[digest] = data
                    return self._answer(201, b"", {"Docker-Content-Digest": digest})
                manifest = json.loads(data)
                for descriptor in [manifest.get("config"), *manifest.get("layers", [])]:
                    if descriptor and descriptor["digest"] not in registry.blobs:
                        return self._answer(400, b'{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN"}]}')
                media_type = self.headers.get("Content-Type", "")
                registry.manifests[match["path"], match["ref"]] = (media_type, data)
                registry.manifests[match["path"], digest_of(data)] = (media_type, data)
                return self._answer(201, b"", {"Docker-Content-Digest": digest_of(data)})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def put_image(self, path: str, tag: str, labels: dict[str, str] | None = None) -> str:
        """An image manifest under ``path:tag`` (its config holds the labels); its digest."""
        config = json.dumps({"config": {"Labels": labels or {}}, "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        self.blobs[digest_of(config)] = config
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": digest_of(config), "size": len(config)},
                               "layers": []}).encode()
        self.manifests[path, tag] = ("application/vnd.oci.image.manifest.v1+json", manifest)
        self.manifests[path, digest_of(manifest)] = self.manifests[path, tag]
        return digest_of(manifest)

    def tags(self, path: str) -> set[str]:
        return {ref for p, ref in self.manifests if p == path and not ref.startswith("sha256:")}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
