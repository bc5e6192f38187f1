from tests.js.test_browser import *  # noqa

def test_probe(server, rec, page) -> None:
    page.goto(f"{server.url}/")
    wait_decided(page)
    click(page, "[data-tailor-slot=hero]")
    set_visibility(page, "hidden")
    page.wait_for_timeout(300)
    kinds = [(r.resource_type, r.url) for r in rec.requests if "/v1/events" in r.url]
    print("KINDS", kinds)
    assert kinds and kinds[0][0] == "ping"
