"""A reverse proxy on 127.0.0.1 in front of a test server, as a private Hugging Face Space or a company proxy
stands in front of Argilla: a real HTTP(S) server (a threaded ``http.server``) forwarding every request to the
real server behind it.

* ``require=(name, value)``: a request without that header gets 401 with the proxy's own HTML body (as a Space
  or proxy answers: not the server's JSON error) and never reaches the server; ``strip`` removes the header
  before forwarding (an authenticating proxy consumes its credential), else it is forwarded as it came.
* ``ca`` (a ``trustme.CA``): serve TLS with a certificate for 127.0.0.1 that this test CA signed.
* ``fail``: a regular expression; requests whose path matches get 502 from the proxy (a 5xx in front).

``seen`` lists ``(method, path, had_the_header)`` of every request, ``forwarded`` counts what went through.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}
REFUSED = b"<html><body><h1>401</h1><p>Sorry, we can't find the page you are looking for.</p></body></html>"


class FrontProxy:
    def __init__(self, upstream: str, require: tuple[str, str] | None = None, strip: bool = True, ca=None,
                 fail: str | None = None):
        self.upstream = urlsplit(upstream)
        self.require, self.strip, self.fail = require, strip, fail
        self.seen: list[tuple[str, str, bool]] = []
        self.forwarded = 0
        self._httpd = _Server(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self.tls = ca is not None
        if ca is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
            # The handshake happens in the handler's thread (first read), not in the accepting one.
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True, do_handshake_on_connect=False)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "FrontProxy":
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            out = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
            if self.strip and self.require:
                out = {k: v for k, v in out.items() if k.lower() != self.require[0].lower()}
            conn.request(method, path, body=body or None, headers=out)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP], data
        finally:
            conn.close()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that refused our certificate: not news
        pass


def _handler(proxy: FrontProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _any(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            ok = proxy.require is None or self.headers.get(proxy.require[0]) == proxy.require[1]
            proxy.seen.append((self.command, self.path, ok))
            if not ok:
                return self._send(401, [("Content-Type", "text/html")], REFUSED)
            if proxy.fail and re.search(proxy.fail, urlsplit(self.path).path):
                return self._send(502, [("Content-Type", "text/html")], b"<html><body>502 Bad Gateway</body></html>")
            try:
                status, headers, data = proxy.forward(self.command, self.path, self.headers, body)
            except OSError:
                return self._send(502, [("Content-Type", "text/plain")], b"upstream unreachable")
            proxy.forwarded += 1
            self._send(status, headers, data)

        def _send(self, status, headers, data):
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

    return Handler
