"""The demo page in a real headless Chromium: the tag fetches a decision from the real server
and fills the slots with it."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]

pytestmark = pytest.mark.browser


class _Slots(HTMLParser):
    """Collects every element with data-tailor-slot: its attributes and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.slots: dict[str, dict[str, str]] = {}
        self.text: dict[str, str] = {}
        self._stack: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        slot = a.get("data-tailor-slot")
        if slot:
            self.slots[slot] = a
            self.text[slot] = ""
        if tag not in ("br", "img", "input", "meta", "link", "hr"):
            self._stack.append(slot)

    def handle_endtag(self, tag: str) -> None:
        if self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        for slot in self._stack:
            if slot:
                self.text[slot] += data


def _dump_dom(url: str, profile: Path) -> _Slots:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs it (.ci/apt-install)")
    out = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=8000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    parser = _Slots()
    parser.feed(out.stdout)
    return parser


def _decide_like_the_page(live_server: LiveServer, url: str) -> dict[str, object]:
    """What the server decides for a fresh visitor on ``url`` (for comparison)."""
    body = {
        "visitorId": "probe",
        "consent": {"personalization": True, "storage": True},
        "context": {"page": {"url": url, "path": "/"}},
        "slots": ["banner"],
    }
    return httpx.post(f"{live_server.url}/v1/decide", json=body, timeout=5).json()  # type: ignore[no-any-return]


def test_demo_page_slots_are_filled_by_the_servers_decision(
    live_server: LiveServer, tmp_path: Path
) -> None:
    dom = _dump_dom(f"{live_server.url}/", tmp_path / "profile")
    assert {"hero", "banner", "recommendation"} <= set(dom.slots)
    for slot in ("hero", "banner", "recommendation"):
        attrs = dom.slots[slot]
        assert attrs.get("data-tailor-variant", "").startswith(
            {"hero": "hero_", "banner": "banner_", "recommendation": "reco_"}[slot]
        ), attrs
        assert len(attrs.get("data-tailor-decision", "")) == 32
        assert dom.text[slot].strip()


def test_arriving_from_a_newsletter_changes_the_page(
    live_server: LiveServer, tmp_path: Path
) -> None:
    email_url = f"{live_server.url}/?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
    direct = _dump_dom(f"{live_server.url}/", tmp_path / "a")
    email = _dump_dom(email_url, tmp_path / "b")
    expected = _decide_like_the_page(live_server, email_url)["slots"]["banner"]  # type: ignore[index]
    assert email.slots["banner"]["data-tailor-variant"] == expected["variantId"]  # type: ignore[index]
    assert expected["content"]["text"] in email.text["banner"]  # type: ignore[index]
    assert (
        email.slots["banner"]["data-tailor-variant"]
        != direct.slots["banner"]["data-tailor-variant"]
    )
