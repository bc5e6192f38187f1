"""Screenshots of the demo store personalized for two personas, for the README.

    python -m docs.screenshots            # or: make screenshots

Starts the server on the demo bundle (``var/bundles/demo``; ``make bundle`` trains it) on a free
loopback port with a throw-away event log, opens ``/?as=loyal`` and ``/?as=researcher`` (the
demo's presets: a stored behaviour profile, written the way the tag keeps it) in headless
Chromium, waits until the tag has filled the slots and the debug panel shows the decision, and
writes ``docs/img/demo-<preset>.png``. Prints each decision's persona and variants.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.js.browser import launch, wait_for

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("loyal", "researcher")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(bundle: Path, events: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = dict(os.environ, TAILOR_BUNDLE=str(bundle), TAILOR_EVENT_LOG_DIR=str(events))
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # polling for readiness
    proc.kill()
    raise SystemExit("the server was not ready in 30 s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "var" / "bundles" / "demo")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tailor-shots-") as events:
        proc, url = _serve(args.bundle, Path(events))
        try:
            with launch() as browser:
                for preset in PRESETS:
                    # A fresh profile per preset: nothing stored from the other.
                    with browser.new_context(viewport={"width": 1280, "height": 860}) as context:
                        page = context.new_page()
                        page.add_init_script(
                            'window.tailor = window.tailor || []; tailor.push(["onDecision", '
                            "function (d) { window.__decision = d; }]);"
                        )
                        page.goto(f"{url}/?as={preset}")
                        wait_for(
                            page,
                            "window.__decision && document.querySelectorAll("
                            "'[data-tailor-variant]').length === 3 && "
                            "document.getElementById('d-status').textContent === 'personalized'",
                        )
                        decision = page.evaluate("window.__decision")
                        shot = args.out / f"demo-{preset}.png"
                        page.screenshot(path=shot)
                        variants = {k: v["variantId"] for k, v in decision["slots"].items()}
                        where = shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot
                        print(f"{where}: {decision['persona']['id']} {variants}")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
