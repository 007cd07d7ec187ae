"""A new user's first visit, in a real browser (Debian's Chromium driven by Playwright) against
a real server: gunicorn and a Celery worker on Redis, on the test's PostgreSQL database.

Every page is saved as a screenshot under the test's tmp dir; the paths are printed (see them
with `pytest -s` or in the report of a failed test).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from billing.models import CreditPack

pytestmark = [pytest.mark.browser, pytest.mark.live]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `make test` installs it
CHROMIUM_ARGS = [
    "--no-sandbox",  # the suite runs as root, where Chromium's own sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
RUN_TIMEOUT_MS = 90_000


class Journey:
    """One browser tab on one server: records every request and screenshots each page."""

    def __init__(self, browser, base_url: str, screenshot_dir: Path) -> None:
        self.base_url = base_url
        self.context = browser.new_context(
            base_url=base_url, viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.requested: list[str] = []
        self.page.on("request", lambda request: self.requested.append(request.url))
        self.failed_responses: list[tuple[int, str]] = []
        self.page.on(
            "response",
            lambda response: (
                self.failed_responses.append((response.status, response.url))
                if response.status >= 400
                else None
            ),
        )
        self.script_errors: list[str] = []
        self.page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        self.screenshot_dir = screenshot_dir
        self.screenshots: list[Path] = []

    def screenshot(self, name: str) -> Path:
        path = self.screenshot_dir / f"{len(self.screenshots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.screenshots.append(path)
        print(f"screenshot: {path}")
        return path

    def scrolls_sideways(self) -> bool:
        return self.page.evaluate(
            "document.documentElement.scrollWidth > document.documentElement.clientWidth"
        )

    def failures(self) -> list[tuple[int, str]]:
        """Responses >= 400 (the pages declare their icon, so none is expected)."""
        return list(self.failed_responses)

    def third_party_requests(self) -> list[str]:
        own = (self.base_url + "/", "data:", "blob:")
        return [url for url in self.requested if not url.startswith(own)]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def browser_on(transactional_db, tmp_path) -> Iterator[Callable[[str], Journey]]:
    """`browser_on(url)` opens a headless Chromium on a live server; closed after the test.

    Playwright's sync API runs an event loop in this thread, where Django then refuses
    database calls: so a test opens the browser once its rows are made, and the browser is
    closed before the database fixtures tear down (hence no session-wide browser).
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-packages` installs Debian's chromium")
    to_close: list[Callable[[], None]] = []

    def open_browser(base_url: str) -> Journey:
        playwright = sync_playwright().start()
        to_close.append(playwright.stop)
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        to_close.append(browser.close)
        screenshot_dir = tmp_path / "screenshots"
        screenshot_dir.mkdir(exist_ok=True)
        return Journey(browser, base_url, screenshot_dir)

    yield open_browser
    for close in reversed(to_close):
        close()


def sign_up(journey: Journey, email: str) -> None:
    """From the landing page's "Try now" to a logged-in account on the API keys page."""
    page = journey.page
    page.goto("/")
    page.get_by_role("link", name="Try now").click()
    expect(page).to_have_url(re.compile(r"/accounts/signup/$"))
    page.get_by_label("Email").fill(email)
    page.get_by_label(re.compile(r"^Password:?$")).fill("a long enough passphrase 42")
    page.get_by_label("Password confirmation").fill("a long enough passphrase 42")
    journey.screenshot("signup")
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(re.compile(r"/accounts/keys/$"))
    expect(page.locator(".who")).to_have_text(email)


def upload_model(journey: Journey, fmu: Path) -> None:
    """Upload an FMU on the portal's Models page; ends on the new model's page."""
    page = journey.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").click()
    page.get_by_label("FMU file").set_input_files(fmu)
    journey.screenshot("upload-form")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator(".messages")).to_contain_text("Uploaded")
    expect(page.get_by_role("link", name="Run this model")).to_be_visible()
    journey.screenshot("model")


def test_signup_key_upload_run_plot_and_csv_download(
    shared_gateway,
    fmu_paths,
    browser_on,
):
    server = shared_gateway.server
    journey = browser_on(server.url)
    page = journey.page

    # The landing page fits a phone as well as a desktop.
    page.set_viewport_size({"width": 375, "height": 812})
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Simulate FMUs over HTTP")
    assert not journey.scrolls_sideways(), "the landing page is wider than a phone"
    journey.screenshot("landing-phone")
    page.set_viewport_size({"width": 1280, "height": 900})
    journey.screenshot("landing")

    # "Try now" -> signup -> logged in on the API keys page, where a new key is shown once.
    email = "new.user@example.com"
    sign_up(journey, email)
    page.get_by_label("Name").fill("browser test")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text().strip()
    assert re.fullmatch(r"fmu_[0-9a-f]{12}_\S+", key), key
    journey.screenshot("new-key")
    account = requests.get(
        f"{server.url}/api/v1/account", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert account.status_code == 200 and account.json()["email"] == email

    # Never shown again: not on a reload (which re-sends the form; its one-time nonce is
    # spent, so no second key is made) and not on a later visit, where it is listed by prefix.
    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)
    expect(page.locator(".messages")).to_contain_text("already sent")
    assert key not in page.content()
    page.goto("/accounts/keys/")
    expect(page.locator("#new-key")).to_have_count(0)
    assert key not in page.content()
    prefix = key.split("_")[1]
    expect(page.get_by_role("cell", name=f"fmu_{prefix}_…")).to_be_visible()
    journey.screenshot("keys-revisited")

    # Upload the bouncing ball, run it and watch it finish.
    upload_model(journey, fmu_paths["bouncing_ball"])
    page.get_by_role("link", name="Run this model").click()
    page.get_by_label("Stop time (s)").fill("3")
    journey.screenshot("run-form")
    page.get_by_role("button", name="Start run").click()
    expect(page).to_have_url(re.compile(r"/portal/runs/[0-9a-f-]{36}/$"))
    expect(page.locator("#run-status")).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#run-progress-text")).to_have_text("100 %")

    # The plot: Plotly's SVG with one trace per plotted output.
    expect(page.locator("#result")).to_be_visible()
    traces = page.locator("#plot svg.main-svg g.trace.scatter")
    expect(traces.first).to_be_visible()
    assert traces.count() == 2  # h and v
    expect(page.locator("#preview tbody tr").first).to_be_visible()
    journey.screenshot("run-succeeded")

    # The CSV download: a real browser download of the whole table.
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text())))
    assert rows[0] == ["time", "h", "v"]
    assert len(rows) > 10 and float(rows[-1][0]) == pytest.approx(3.0)
    # The page's preview shows the numbers the CSV has, to the same 15 digits.
    preview = page.locator("#preview tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.cells].map(cell => cell.textContent))"
    )
    assert preview
    for shown, downloaded in zip(preview, rows[1:], strict=False):
        assert [float(value) for value in shown] == [float(value) for value in downloaded]

    assert journey.third_party_requests() == []
    assert journey.failures() == []
    assert journey.script_errors == []


@pytest.mark.stripe
def test_with_billing_on_pricing_shows_the_packs_and_a_run_without_credit_offers_checkout(
    shared_billing_web,
    fake_stripe,
    fmu_paths,
    browser_on,
):
    # The migration's packs may be gone (live-server tests empty the tables after them).
    for name, credit_cents, price_cents in (("10 runs", 1000, 900), ("50 runs", 5000, 4000)):
        CreditPack.objects.update_or_create(
            name=name,
            defaults={"credit_cents": credit_cents, "price_cents": price_cents, "active": True},
        )
    (server,) = shared_billing_web(1)
    journey = browser_on(server.url)
    page = journey.page
    # Stripe's real pages are out of reach here: a stand-in page marks where a browser goes.
    page.route(
        "https://checkout.stripe.com/**",
        lambda route: route.fulfill(
            status=200, content_type="text/html", body="<title>Stripe Checkout (stand-in)</title>"
        ),
    )

    page.goto("/")
    expect(page.locator(".banner")).to_have_text("Stripe test mode: no real money is charged.")
    expect(page.locator("#landing-price")).to_have_text("$1.00")
    expect(
        page.get_by_text("$10.00 of credit for $9.00, $50.00 of credit for $40.00")
    ).to_be_visible()
    journey.screenshot("landing-billing-on")
    sign_up(journey, "payer@example.com")

    # The pricing page lists the packs, each with a Buy button that goes to Stripe Checkout.
    expect(page.locator("#header-balance")).to_contain_text("Billing · $0.00")
    page.goto("/pricing/")
    expect(page.locator("#price-per-run")).to_have_text("$1.00")
    pack_rows = page.locator("table tbody tr")
    expect(pack_rows).to_have_count(2)
    expect(pack_rows.nth(0)).to_contain_text("10 runs")
    expect(pack_rows.nth(0)).to_contain_text("$9.00")
    expect(pack_rows.nth(1)).to_contain_text("$40.00")
    journey.screenshot("pricing")
    page.get_by_role("button", name="Buy 10 runs").click()
    expect(page).to_have_url(re.compile(r"^https://checkout\.stripe\.com/c/pay/cs_test_"))
    (pack_session,) = fake_stripe.sessions.values()
    assert pack_session["amount_total"] == 900

    # A run without credit: the run page answers 402 with the link to pay for this run.
    page.goto(server.url + "/portal/models/")
    upload_model(journey, fmu_paths["bouncing_ball"])
    page.get_by_role("link", name="Run this model").click()
    with page.expect_response(re.compile(r"/portal/models/[0-9a-f-]{36}/run/$")) as answer:
        page.get_by_role("button", name="Start run").click()
    assert answer.value.status == 402
    error = page.locator("#run-error")
    expect(error).to_contain_text("You have no credit")
    pay = error.get_by_role("link", name="Pay for this run")
    run_session = next(
        session for session in fake_stripe.sessions.values() if session["amount_total"] == 100
    )
    expect(pay).to_have_attribute("href", run_session["url"])
    expect(error.get_by_role("link", name="buy a credit pack")).to_have_attribute(
        "href", "/pricing/"
    )
    journey.screenshot("run-402")

    outside = [url for url in journey.third_party_requests() if "checkout.stripe.com" not in url]
    assert outside == []
    assert [failure for failure in journey.failures() if failure[0] != 402] == []
    assert journey.script_errors == []


def test_a_grid_study_of_two_parameters_from_the_portal_runs_plots_and_downloads(
    shared_gateway,
    fmu_paths,
    browser_on,
):
    server = shared_gateway.server
    journey = browser_on(server.url)
    page = journey.page
    sign_up(journey, "engineer@example.com")
    upload_model(journey, fmu_paths["bouncing_ball"])

    # New study: e listed, h as a range of 2 points; the live price counts the cases.
    page.get_by_role("link", name="New study").click()
    expect(page).to_have_url(re.compile(r"/portal/models/[0-9a-f-]{36}/study/$"))
    page.get_by_label("Vary e", exact=True).check()
    page.get_by_label("Values of e", exact=True).fill("0.5, 0.7, 0.9")
    page.get_by_label("Vary h", exact=True).check()
    page.get_by_label("From / low of h", exact=True).fill("1")
    page.get_by_label("To / high of h", exact=True).fill("2")
    page.get_by_label("Points of h", exact=True).fill("2")
    page.get_by_label("Stop time (s)").fill("2")
    expect(page.locator("#study-price")).to_have_text("6 cases · free on this server")
    journey.screenshot("study-form")
    page.set_viewport_size({"width": 390, "height": 844})
    assert not journey.scrolls_sideways(), "the new-study form is wider than a phone"
    journey.screenshot("study-form-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Start it and watch it finish, live.
    page.get_by_role("button", name="Start study").click()
    expect(page).to_have_url(re.compile(r"/portal/studies/[0-9a-f-]{36}/$"))
    expect(page.locator("#study-status")).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#study-progress-text")).to_have_text("100 %")
    expect(page.locator("#study-count-succeeded")).to_have_text("6")

    # The scatter plot: one point per case, of the chosen statistic against the parameter.
    expect(page.locator("#plots")).to_be_visible()
    expect(page.locator("#scatter g.points path.point")).to_have_count(6)
    expect(page.get_by_label("Parameter")).to_have_value("h")
    page.get_by_label("Parameter").select_option("e")
    page.get_by_label("Statistic").select_option("final(h)")
    expect(page.locator("#scatter .xtitle")).to_have_text("e")
    expect(page.locator("#scatter .ytitle")).to_have_text("final(h)")
    expect(page.locator("#parcoords-figure")).to_be_hidden()  # two parameters: no need

    # The table of cases sorts by any column.
    rows = page.locator("#cases tbody tr")
    expect(rows).to_have_count(6)
    page.locator("#cases thead").get_by_role("button", name="final(h)").click()
    page.locator("#cases thead").get_by_role("button", name=re.compile(r"^final\(h\)")).click()
    expect(page.locator("#cases thead th[aria-sort=descending]")).to_have_count(1)
    table = rows.evaluate_all(
        "rows => rows.map(row => [...row.cells].map(cell => cell.textContent))"
    )
    header = page.locator("#cases thead th").evaluate_all("cells => cells.map(c => c.textContent)")
    column = header.index("final(h) ▼")
    shown = [float(row[column]) for row in table]
    assert shown == sorted(shown, reverse=True)
    journey.screenshot("study-succeeded")
    page.set_viewport_size({"width": 390, "height": 844})
    assert not journey.scrolls_sideways(), "the study page is wider than a phone"
    journey.screenshot("study-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Downloads: the summary (CSV and Parquet) and one case's trace.
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download summary (CSV)").click()
    summary = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert list(summary[0]) == ["index", "status", "error_code", "h", "e", "final(h)", "final(v)"]
    assert sorted((float(row["e"]), float(row["h"])) for row in summary) == sorted(
        (e, h) for e in (0.5, 0.7, 0.9) for h in (1.0, 2.0)
    )
    assert {row["status"] for row in summary} == {"succeeded"}
    by_index = {int(row[0]): float(row[column]) for row in table}
    for row in summary:  # the table shows the summary's numbers (to 10 digits)
        assert by_index[int(row["index"])] == pytest.approx(float(row["final(h)"]), rel=1e-9)
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download summary (Parquet)").click()
    assert Path(download_info.value.path()).read_bytes()[:4] == b"PAR1"
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the trace of case 0 as CSV").click()
    trace = list(csv.reader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert trace[0] == ["time", "h", "v"]
    assert float(trace[-1][0]) == pytest.approx(2.0)

    # Three parameters: a parallel-coordinates plot joins the scatter plot.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").click()
    page.get_by_role("link", name="bouncing_ball").first.click()
    page.get_by_role("link", name="New study").click()
    for name, values in (("e", "0.5, 0.9"), ("h", "1, 2"), ("g", "9.81, 3.7")):
        page.get_by_label(f"Vary {name}", exact=True).check()
        page.get_by_label(f"Values of {name}", exact=True).fill(values)
    expect(page.locator("#study-price")).to_have_text("8 cases · free on this server")
    page.get_by_role("button", name="Start study").click()
    expect(page.locator("#study-status")).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#parcoords-figure")).to_be_visible()
    expect(page.locator("#parcoords g.y-axis")).to_have_count(4)  # h, g, e and the statistic
    expect(page.locator("#scatter g.points path.point")).to_have_count(8)
    journey.screenshot("study-three-parameters")

    # A model whose cases crash when asked: the failed ones are listed with their error.
    upload_model(journey, fmu_paths["case_behaviour"])
    page.get_by_role("link", name="New study").click()
    for name, values in (("mode", "0, 1"), ("k", "1, 2")):
        page.get_by_label(f"Vary {name}", exact=True).check()
        page.get_by_label(f"Values of {name}", exact=True).fill(values)
    page.get_by_role("button", name="Start study").click()
    expect(page.locator("#study-status")).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#study-count-failed")).to_have_text("2")
    failed = page.locator("#failed-list li")
    expect(failed).to_have_count(2)
    for item in failed.all():
        expect(item).to_contain_text("mode = 1")
        expect(item).to_contain_text("model_crashed")
    expect(page.locator("#scatter g.points path.point")).to_have_count(2)  # the two that ran
    journey.screenshot("study-failed-cases")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Studies").click()
    expect(page.locator("tbody tr")).to_have_count(3)
    assert journey.third_party_requests() == []
    assert journey.failures() == []
    assert journey.script_errors == []
