"""The inspector's security, in chromium: no key, no page; a namespace-bound key sees its namespace only;
forged and cross-site writes are refused; the poisoning and injection corpora render as inert text."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from playwright.sync_api import expect

from memstore.errors import InvalidInputError

DATA = Path(__file__).resolve().parents[2] / "data"
INJECTIONS: list[str] = json.loads((DATA / "injection_corpus.json").read_text())
PASTED = json.loads((DATA / "pasted_instructions.json").read_text())
# HTML that would run script or change the page if it were ever interpreted
HOSTILE_HTML = [
    '<script>window.__pwned = "script"</script>',
    '<img src=x onerror="window.__pwned = \'img\'">',
    '"><svg onload="window.__pwned = \'svg\'">',
    "'><iframe srcdoc=\"<script>parent.__pwned = 'iframe'</script>\"></iframe>",
    '</textarea><script>window.__pwned = "textarea"</script>',
    '</pre><style>body { display: none }</style><base href="https://evil.example/">',
    '<a href="javascript:window.__pwned = \'link\'">click me</a>',
    '<meta http-equiv="refresh" content="0; url=https://evil.example/">',
    "{{ 7 * 7 }} {% if true %}jinja{% endif %} ${7*7}",
]
FOREIGN_TAGS = ("img, svg, iframe, object, embed, style, base, meta[http-equiv], a[href^='javascript'], memory, rule, "
                "memstore_context, user_profile, user_instructions, response_style, tool_call, x")


def _no_markup_interpreted(page: Any) -> None:
    """Nothing of the stored text became markup or ran: only our two scripts, no foreign element, no event
    handler attribute, no dialog, no marker set by a script."""
    assert page.evaluate("() => window.__pwned") is None
    scripts = page.locator("script").evaluate_all("els => els.map(e => e.getAttribute('src'))")
    assert scripts == ["/ui/static/htmx.min.js", "/ui/static/ui.js"]
    assert page.locator(FOREIGN_TAGS).count() == 0
    assert not page.evaluate("() => [...document.querySelectorAll('*')].some("
                             "el => [...el.attributes].some(a => a.name.toLowerCase().startsWith('on')))")
    expect(page.locator("body")).to_be_visible()


def _norm(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def test_refused_without_a_key(inspector: Any, page: Any, browser: Any) -> None:
    mem = inspector.mem
    mid = mem.add("Lives in Berlin", user_id="alice", infer=False)[0].memory.id
    for path in ("/ui/", "/ui/memories?user=alice", f"/ui/memory?id={mid}&user=alice", "/ui/outbox",
                 "/ui/preview?user=alice&message=hi", "/ui/instructions?user=alice"):
        page.goto(inspector.url + path)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert "Lives in Berlin" not in page.content()
    # a write without a session: refused, nothing changed
    resp = page.request.post(f"{inspector.url}/ui/memory/delete", form={"id": mid, "user": "alice", "csrf": "x"},
                             headers={"Origin": inspector.url}, max_redirects=0)
    assert resp.status in (401, 403)
    assert mem.get(mid).text == "Lives in Berlin"

    # wrong key, and a key without the admin scope
    page.goto(f"{inspector.url}/ui/login")
    page.get_by_label("Admin key").fill("msk_000000000000_" + "A" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That key is wrong or revoked.")
    page.get_by_label("Admin key").fill(inspector.key_for("proxy-only", admin=False))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("no admin scope")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    # signed in: the cookie is HttpOnly, SameSite=Strict, signed, and is not the key
    inspector.sign_in(page)
    expect(page.get_by_role("heading", name="Users")).to_be_visible()
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["memstore_ui"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/ui"
    assert inspector.key not in session["value"] and inspector.key.split("_")[2] not in session["value"]
    assert page.evaluate("() => document.cookie") == ""
    # a tampered cookie is no session
    page.context.add_cookies([{**session, "value": session["value"][:-2] + "AA"}])
    page.goto(f"{inspector.url}/ui/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    # signing out ends the session even for a copy of the cookie
    inspector.sign_in(page)
    stolen = next(c for c in page.context.cookies() if c["name"] == "memstore_ui")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("Signed out.")
    page.context.add_cookies([stolen])
    page.goto(f"{inspector.url}/ui/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    # revoking the key ends its sessions at once
    from memstore.adapters.server.keys import KeyStore

    inspector.sign_in(page)
    KeyStore(mem.engine).revoke(inspector.key)
    page.goto(f"{inspector.url}/ui/memories?user=alice")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    # only a path of the inspector is a place to go after signing in
    admin = inspector.key_for("second-admin")
    page.goto(f"{inspector.url}/ui/login?next={quote('//evil.example/x')}")
    page.get_by_label("Admin key").fill(admin)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{inspector.url}/ui/")


def test_security_headers(inspector: Any, page: Any) -> None:
    for path in ("/ui/login", "/ui/static/ui.css"):
        resp = page.request.get(inspector.url + path)
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert resp.headers["x-frame-options"] == "DENY" and resp.headers["x-content-type-options"] == "nosniff"
    inspector.sign_in(page)
    resp = page.request.get(f"{inspector.url}/ui/")
    assert resp.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert page.request.get(f"{inspector.url}/ui/static/..%2Fauth.py").status == 404


def test_a_namespace_bound_key_sees_only_its_namespace(inspector: Any, page: Any) -> None:
    mem = inspector.mem
    alice = mem.add("Alice lives in Berlin", user_id="alice", infer=False)[0].memory.id
    mem.add("Bob lives in Oslo", user_id="bob", namespace="shop", infer=False)
    mem.outbox.record("alice", "default", [{"role": "user", "content": "default-namespace turn"}], "ok", extract=False)
    mem.outbox.record("bob", "shop", [{"role": "user", "content": "shop turn"}], "ok", extract=False)
    inspector.sign_in(page, inspector.key_for("shop-admin", namespace="shop"))

    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text("bob")
    expect(page.locator(".who .badge")).to_have_text("shop")
    page.get_by_role("link", name="bob").click()
    expect(page.locator(".memory .text")).to_have_text(["Bob lives in Oslo"])

    for path in ("/ui/memories?user=alice&ns=default", "/ui/instructions?user=alice&ns=default",
                 "/ui/outbox?ns=default", f"/ui/memory?id={alice}&user=alice&ns=default"):
        page.goto(inspector.url + path)
        expect(page.get_by_role("alert")).to_contain_text("bound to namespace 'shop'")
        assert "Alice lives in Berlin" not in page.content()
    page.goto(f"{inspector.url}/ui/memory?id={alice}&user=alice&ns=shop")  # the id alone does not reach it
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    page.goto(f"{inspector.url}/ui/outbox?status=all")
    expect(page.locator(".turn")).to_have_count(1)
    expect(page.locator(".turn")).to_contain_text("shop turn")

    # a forged write aimed at the other namespace's memory changes nothing
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    for ns in ("default", "shop"):
        resp = page.request.post(f"{inspector.url}/ui/memory/delete", max_redirects=0,
                                 form={"csrf": csrf, "id": alice, "user": "alice", "ns": ns},
                                 headers={"Origin": inspector.url})
        assert resp.status in (403, 404)
    assert mem.get(alice).text == "Alice lives in Berlin"


def test_csrf_is_refused(inspector: Any, page: Any, browser: Any) -> None:
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse
    from memstore.adapters.ui.standalone import ThreadedServer

    mem = inspector.mem
    mid = mem.add("Lives in Berlin", user_id="alice", infer=False)[0].memory.id
    inspector.sign_in(page)
    inspector.open_user(page, "alice")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    delete = f"{inspector.url}/ui/memory/delete"
    form = {"id": mid, "user": "alice", "ns": "default"}

    # same origin, signed in, but no token or a wrong one
    for token in ("", "forged", csrf[:-1] + ("A" if csrf[-1] != "A" else "B")):
        resp = page.request.post(delete, form={**form, "csrf": token}, headers={"Origin": inspector.url},
                                 max_redirects=0)
        assert resp.status == 403 and "security token" in resp.text()
    # the right token from another origin
    for origin in ("http://evil.example", "null"):
        resp = page.request.post(delete, form={**form, "csrf": csrf}, headers={"Origin": origin}, max_redirects=0)
        assert resp.status == 403
    resp = page.request.post(delete, form={**form, "csrf": csrf}, max_redirects=0,
                             headers={"Origin": inspector.url, "Sec-Fetch-Site": "cross-site"})
    assert resp.status == 403
    assert mem.get(mid).text == "Lives in Berlin"

    # a real cross-site form post from another origin's page, in the signed-in browser
    attacker = FastAPI()
    fields = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in {**form, "csrf": csrf}.items())

    @attacker.get("/")
    def lure() -> HTMLResponse:
        return HTMLResponse(f'<form method="post" action="{delete}">{fields}<button>win a prize</button></form>')

    with ThreadedServer(attacker, host="localhost") as evil:
        page.goto(evil.url + "/")
        page.get_by_role("button", name="win a prize").click()
        page.wait_for_load_state()
        assert page.url.startswith(inspector.url)
        expect(page.get_by_role("alert")).to_contain_text("did not come from the inspector's own pages")
    assert mem.get(mid).text == "Lives in Berlin"

    # the same form from the inspector's own page works
    inspector.open_user(page, "alice")
    page.locator(".memory").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("status")).to_have_text("Memory deleted. Its history is kept.")


def _seed_hostile(mem: Any) -> tuple[str, list[str]]:
    """Every corpus string as a memory, instruction, rule, turn, error and user id. Returns the hostile user id
    and the texts stored for alice."""
    carriers = [c["messages"][-1]["content"].replace("{instruction}", PASTED["instructions"][i % 10])
                for i, c in enumerate(PASTED["carriers"])]
    texts = INJECTIONS + carriers + HOSTILE_HTML
    for text in texts:
        with contextlib.suppress(InvalidInputError):  # e.g. only whitespace: refused by the write path
            mem.add(text, user_id="alice", infer=False)
    first = mem.get_all("alice")[0]
    mem.update(first.id, HOSTILE_HTML[1] + " (edited)", user_id="alice", reason=HOSTILE_HTML[0])
    mem.invalidate(mem.get_all("alice")[1].id, user_id="alice", reason=HOSTILE_HTML[2])
    mem.set_instructions("alice", about_user="\n".join(HOSTILE_HTML)[:1500],
                         response_style=HOSTILE_HTML[4] + INJECTIONS[6])
    rules = mem.rules("alice")
    for text in (*HOSTILE_HTML[:4], INJECTIONS[7], INJECTIONS[9]):
        rules.add(text[:300])
    rules.add(HOSTILE_HTML[5][:300], source="extracted", proposed=True)
    hostile_user = HOSTILE_HTML[1]
    mem.add(HOSTILE_HTML[0], user_id=hostile_user, infer=False)
    for who in ("alice", hostile_user):
        turn = mem.outbox.record(who, "default", [{"role": "user", "content": HOSTILE_HTML[3] + INJECTIONS[43]}],
                                 HOSTILE_HTML[0], extract=False)
        mem.outbox.mark([turn], "failed", "ValueError: " + HOSTILE_HTML[2] + INJECTIONS[8], attempted=True)
    return hostile_user, [m.text for m in mem.get_all("alice", include_invalid=True)]


def test_poisoning_and_injection_corpora_render_inert(inspector: Any, page: Any) -> None:
    mem = inspector.mem
    hostile_user, stored = _seed_hostile(mem)
    assert len(stored) > 60
    inspector.sign_in(page)

    def visit(path: str, **params: str) -> None:
        page.goto(inspector.url + path + ("?" + urlencode(params) if params else ""))
        _no_markup_interpreted(page)

    visit("/ui/")
    expect(page.get_by_role("link", name=hostile_user)).to_be_visible()  # the user id, as text
    page.get_by_role("link", name=hostile_user).click()
    _no_markup_interpreted(page)
    expect(page.locator(".memory .text")).to_have_text([HOSTILE_HTML[0]])
    expect(page.locator("h1.user")).to_have_text(hostile_user)

    visit("/ui/memories", user="alice", status="all")
    shown = page.locator(".memory .text").evaluate_all("els => els.map(e => e.textContent)")
    assert sorted(shown) == sorted(_norm(t) for t in stored)  # every stored text, exactly, as text
    for rec in mem.get_all("alice", include_invalid=True)[2::-1]:  # the edited one (first) last
        visit("/ui/memory", id=rec.id, user="alice")
        assert page.get_by_label("Text").input_value() == _norm(rec.text)
    expect(page.locator("table.history")).to_contain_text(HOSTILE_HTML[0])  # a reason, as text

    visit("/ui/instructions", user="alice")
    assert page.get_by_label("About you").input_value() == mem.profile("alice").about_user
    assert page.get_by_label("How to respond").input_value() == mem.profile("alice").response_style
    visit("/ui/rules", user="alice")
    expect(page.locator(".rule .text").first).to_have_text(HOSTILE_HTML[0])
    visit("/ui/outbox")
    expect(page.locator(".error-text").first).to_contain_text(HOSTILE_HTML[2])
    visit("/ui/outbox", user=hostile_user, status="all")
    for message in (HOSTILE_HTML[0], INJECTIONS[6], INJECTIONS[44]):
        visit("/ui/preview", user="alice", message=message)
        expect(page.locator("#message")).to_have_value(message)
    expect(page.get_by_label("The stable block")).to_contain_text("<")  # markup shown as text
    for q in (HOSTILE_HTML[2], INJECTIONS[54]):
        visit("/ui/memories", user="alice", q=q)
    visit("/ui/memory", id=HOSTILE_HTML[2], user="alice")  # the id comes back in the error message
    expect(page.get_by_role("alert")).to_contain_text('"><svg onload="window.__pwned')
    visit("/ui/login", next=HOSTILE_HTML[2])
    assert inspector.dialogs == []
