"""The loopback site server: hands a build its site settings without writing them anywhere.

Index URLs with credentials, an extra CA bundle and mirrors are served on 127.0.0.1 for as
long as one classic build runs; each network RUN step reads them with templates/context/site.sh.
So they never reach a layer, `docker history`, or the content tag. A classic build must use host
networking to reach the server; `stackbuild build` refuses other modes when settings are set.
BuildKit builds get the same payload as a build secret instead (builder/engine/buildkit.py): any network.
"""

from __future__ import annotations

import base64
import errno
import socketserver
import threading
from types import TracebackType

from ..errors import ConfigError

SITE_PORT = 47391  # fixed: it is written into every rendered Dockerfile (site.sh)


def payload(values: dict[str, str]) -> bytes:
    """What site.sh reads: one ``KEY base64(value)`` line a setting (from this server or a BuildKit secret)."""
    lines = [f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in sorted(values.items())]
    return ("\n".join(lines) + "\n").encode()


class SiteServer:
    """Context manager serving ``values`` on 127.0.0.1:SITE_PORT; a no-op when there are none."""

    def __init__(self, values: dict[str, str], port: int = SITE_PORT):
        self.values = values
        self.port = port
        self._server: socketserver.TCPServer | None = None
        self._thread: threading.Thread | None = None
        self.requests = 0

    def payload(self) -> bytes:
        return payload(self.values)

    def __enter__(self) -> SiteServer:
        if not self.values:
            return self
        payload = self.payload()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner.requests += 1
                self.request.sendall(payload)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        try:
            self._server = Server(("127.0.0.1", self.port), Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"cannot serve site settings on 127.0.0.1:{self.port}: the port is in use "
                                  "(is another stackbuild build running on this host?)") from None
            raise ConfigError(f"cannot serve site settings on 127.0.0.1:{self.port}: {exc.strerror}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="stackbuild-site", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
