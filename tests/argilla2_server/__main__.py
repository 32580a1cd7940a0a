"""``python -m tests.argilla2_server [DIR]``: run the test server by hand (the web app too) until Ctrl-C."""

import signal
import sys
import tempfile

from tests.argilla2_server import Argilla2Server

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on SIGTERM too
srv = Argilla2Server(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="argilla2-")).start()
print(f"{srv.url} key {srv.api_key} (user argilla, password zs-ray-test-password; log {srv.log_path})", flush=True)
try:
    signal.pause()
except KeyboardInterrupt:
    pass
finally:
    srv.stop()
