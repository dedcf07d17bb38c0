"""A real browser (Debian's chromium, driven by Playwright) against a real portal and gateway:
enrol from the invitation link, log in with a TOTP code, walk the six-step wizard (an error is
shown on the step that caused it), see the gateway route the new group, generate a key pair and
download it (at once, and again with a fresh code), and be refused another entity's page.

Screenshots of every wizard step go to ``tests/portal/artifacts/`` (gitignored). With
``DCGW_README_SCREENSHOTS=1`` the README's pictures in ``docs/img/`` are written too.

Playwright's own browser download is not reachable here; the tests use ``/usr/bin/chromium``
(``.ci/run`` installs the package) and skip, saying so, only when it is absent."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
import pytest_asyncio

from .conftest import PASSWORD, Authenticator
from .test_api_gateway import GROUP, until

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"
README_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium package is not "
                       "installed (apt-get install chromium; .ci/run installs it)"),
]


@pytest_asyncio.fixture
async def browser():
    from playwright.async_api import async_playwright
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=60_000)
        try:
            yield b
        finally:
            await b.close()


async def shot(page, name: str, readme: str | None = None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if readme and os.environ.get("DCGW_README_SCREENSHOTS") == "1":
        README_IMG.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(README_IMG / f"{readme}.png"), full_page=True)


async def enrol_and_log_in(page, stack, name: str) -> Authenticator:
    await page.goto(f"{stack.url}/enrol/{stack.invite(name)}")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_label("Password again").fill(PASSWORD)
    await page.get_by_role("button", name="Continue").click()
    uri = await page.locator("#totp_uri").inner_text()
    assert uri.startswith("otpauth://totp/") and await page.locator(".qr svg").count() == 1
    auth = Authenticator(uri)
    await page.get_by_label("Code").fill(await auth.code())
    await page.get_by_role("button", name="Confirm").click()
    await page.get_by_role("link", name="Log in").click()
    await page.get_by_label("User").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Code").fill(await auth.code())
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_url("**/home")
    return auth


async def next_step(page, n: int) -> None:
    await page.get_by_role("button", name="Next").click()
    await page.wait_for_url(f"**/wizard/{n}")


async def test_wizard_keys_and_refusal_in_a_browser(start_stack, browser):
    s = await start_stack()
    s.web.state.groups.create({**GROUP, "entity": "CLEARCO", "name": "taken",
                               "targets": ["CLR001N"], "front_end": "ilink2"}, actor="test")
    context = await browser.new_context(accept_downloads=True,
                                        viewport={"width": 1100, "height": 760})
    context.set_default_timeout(15_000)
    page = await context.new_page()
    auth = await enrol_and_log_in(page, s, "carl")
    await shot(page, "home")

    # the wizard: one page per step, each with the venue's label
    await page.goto(f"{s.url}/groups/new")
    await page.get_by_label("Registered Entity").select_option("CLEARCO")
    await shot(page, "wizard-1-registered-entity", "wizard-1")
    await next_step(page, 2)
    await page.get_by_label("Group Name").fill("bad name!")
    await next_step(page, 2)                          # refused on this step, shown here
    assert "group name is" in await page.get_by_role("alert").inner_text()
    await page.get_by_label("Group Name").fill("taken")
    await shot(page, "wizard-2-group-name", "wizard-2")
    await next_step(page, 3)
    await page.get_by_label("Front End System").select_option("fix")
    targets = page.get_by_label("Target Sessions", exact=True)     # PORTAL.md: labelled
    assert not await targets.get_by_label("CLR001N").is_visible()   # takes ilink2 copies only
    await targets.get_by_label("CLRFIX44").check()
    await shot(page, "wizard-3-front-end-system", "wizard-3")
    await next_step(page, 4)
    filters = page.get_by_label("Filters", exact=True)
    for category in ("execution", "acknowledgment", "order", "mass_action", "reject"):
        assert await filters.get_by_label(category, exact=True).count() == 1
    await filters.get_by_label("execution", exact=True).check()
    await page.get_by_label("Account: exclude").fill("ACCT09")
    await shot(page, "wizard-4-filters", "wizard-4")
    await next_step(page, 5)
    await page.get_by_label("Source Sender Comps", exact=True).get_by_label("ABC123N").check()
    await shot(page, "wizard-5-source-sender-comps", "wizard-5")
    await next_step(page, 6)
    await shot(page, "wizard-6-submit", "wizard-6")
    await page.get_by_role("button", name="Submit").click()
    await page.wait_for_url("**/wizard/2")             # the duplicate name: back to step 2
    assert "duplicate group name" in await page.get_by_role("alert").inner_text()
    await page.get_by_label("Group Name").fill("browser-fills")
    for n in (3, 4, 5, 6):                             # the other steps kept their answers
        await next_step(page, n)
    await page.get_by_role("button", name="Submit").click()
    await page.wait_for_url("**/entities/CLEARCO/groups/browser-fills")
    assert "Created group browser-fills" in await page.get_by_role("status").inner_text()
    await until(lambda: "browser-fills" in {g.name for g in s.gateway.gw.maintenance.config.groups},
                what="the gateway to load the group made in the browser")
    group = next(g for g in s.gateway.gw.maintenance.config.groups if g.name == "browser-fills")
    assert (group.front_end, group.targets, group.sources) == ("fix", ("CLRFIX44",),
                                                               ("ABC123N",))
    assert group.filters.account is not None and group.filters.account.exclude == {"ACCT09"}

    # key pairs: generate (the secret once, with a download), download again with a code
    await page.goto(f"{s.url}/entities/CLEARCO/keys")
    assert "four weeks" in await page.locator(".explain").inner_text()
    await page.get_by_label("Session ID").select_option("CLRFIX44")
    await page.get_by_role("button", name="Generate").click()
    secret = await page.locator("#secret_key").inner_text()
    key_id = await page.locator("#access_key_id").inner_text()
    await shot(page, "key-generated", "key-generated")
    async with page.expect_download() as first:
        await page.get_by_role("link", name="Download").click()
    rows = list(csv.reader(io.StringIO(Path(await (await first.value).path()).read_text())))
    assert rows[1][:3] == ["CLRFIX44", key_id, secret]

    await page.goto(f"{s.url}/entities/CLEARCO/keys")
    row = page.locator(f"tr[data-key='{key_id}']")
    await shot(page, "keys", "keys")
    await row.locator("form.delete").get_by_label("Code").fill("000000")
    await row.get_by_role("button", name="Delete").click()
    assert "need a current code" in await page.get_by_role("status").inner_text()
    row = page.locator(f"tr[data-key='{key_id}']")
    await row.locator("form.download").get_by_label("Code").fill(await auth.code())
    async with page.expect_download() as again:
        await row.get_by_role("button", name="Download").click()
    text = Path(await (await again.value).path()).read_text()
    assert secret in text and (await again.value).suggested_filename == f"{key_id}.csv"
    assert secret not in await page.content()          # the list never shows a secret

    # another entity's page is refused
    response = await page.goto(f"{s.url}/entities/TRADECO/groups")
    assert response is not None and response.status == 403
    assert "not entitled" in await page.get_by_role("alert").inner_text()
    await shot(page, "refused")
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url("**/login")
    assert (await page.goto(f"{s.url}/home")).url.endswith("/login")
    await context.close()


async def test_login_page_refuses_with_one_message(start_stack, browser):
    s = await start_stack()
    await s.enrol("tina")
    page = await browser.new_page()
    await page.goto(f"{s.url}/login")
    await page.get_by_label("User").fill("tina")
    await page.get_by_label("Password").fill("wrong password!")
    await page.get_by_label("Code").fill("123456")
    await page.get_by_role("button", name="Log in").click()
    assert await page.get_by_role("alert").inner_text() == "login failed"
    await shot(page, "login-refused")
    await page.close()


async def test_edit_unchanged_keeps_every_value_and_the_sessions_page_shows(start_stack, browser):
    """Edit, Next five times, Submit: the group is as it was, values with a comma, a quote or
    spaces included (the wizard's field quotes them); the Sessions page lists the entity's."""
    s = await start_stack()
    filters = {"categories": ["execution"], "account": {"include": ["ACC,01", "ACC02"]},
               "symbol": {"exclude": ["BRK A", 'Q"T', " pad "]}}
    s.web.state.groups.create({**GROUP, "entity": "CLEARCO", "name": "commas",
                               "filters": filters}, actor="test")
    before = next(g for g in s.web.state.groups.current() if g.name == "commas")
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    context.set_default_timeout(15_000)
    page = await context.new_page()
    await enrol_and_log_in(page, s, "carl")
    await page.goto(f"{s.url}/entities/CLEARCO/groups/commas")
    assert '"ACC,01", ACC02' in await page.locator("dl").inner_text()
    await page.get_by_role("link", name="Edit").click()
    await page.wait_for_url("**/wizard/1")
    for n in (2, 3, 4):
        await next_step(page, n)
    assert await page.get_by_label("Account: include").input_value() == '"ACC,01", ACC02'
    await next_step(page, 5)
    await next_step(page, 6)
    await page.get_by_role("button", name="Submit").click()
    await page.wait_for_url("**/entities/CLEARCO/groups/commas")
    after = next(g for g in s.web.state.groups.current() if g.name == "commas")
    assert after == before
    assert after.filters.account is not None and after.filters.account.include == {
        "ACC,01", "ACC02"}

    await page.get_by_role("link", name="Sessions").click()
    await page.wait_for_url("**/entities/CLEARCO/sessions")
    assert await page.get_by_role("heading", name="Sessions of CLEARCO").count() == 1
    rows = await page.locator("tbody tr td:first-child").all_inner_texts()
    assert sorted(rows) == ["CLR001N", "CLRFIX44"]                # only CLEARCO's sessions
    await context.close()
