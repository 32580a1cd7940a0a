"""Open a self-contained report (report.html of evaluate or agreement) offline in a real headless Chromium: every
image must decode, nothing may log to the console, and a screenshot must render. Fails, never skips, without
a browser (tests/run.sh installs Debian's chromium where it may)."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        pytest.fail("no headless browser: the report must be opened in a real Chromium; install it "
                    "(`apt-get install chromium`, as .ci/run does) - this test does not skip")
    return found


def open_offline(report, tmp_path, images: int) -> None:
    """``report`` (a Path) loads with ``images`` decoded images, a clean console, and renders a screenshot."""
    # A copy that tells, once loaded, whether every image decoded (naturalWidth > 0) in the browser.
    probe = report.parent / "probe.html"
    probe.write_text(report.read_text().replace("</body>", "<script>window.addEventListener('load', () => "
                     "document.body.setAttribute('data-decoded', [...document.images].map(i => i.complete && "
                     "i.naturalWidth > 0).join(',')));</script></body>"))
    base = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(base + ["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'data-decoded="{",".join(["true"] * images)}"' in dom.stdout, dom.stdout[:500]
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    probe.unlink()
    shot = subprocess.run(base + ["--window-size=1200,1600", f"--screenshot={tmp_path / 'shot.png'}", report.as_uri()],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shot.returncode == 0 and (tmp_path / "shot.png").stat().st_size > 20_000, shot.stderr[-2000:]
