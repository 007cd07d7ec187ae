"""The landing page: what it says, that it is accessible and self-contained, and that its curl
example works verbatim against a real server (gunicorn, a Celery worker on Redis, PostgreSQL)."""

from __future__ import annotations

import csv
import io
import itertools
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, override_settings

from accounts.services import api_key_create
from accounts.tests.factories import UserFactory
from billing.models import CreditPack
from billing.selectors import credit_balance
from billing.tests.factories import LedgerEntryFactory

SITE_CSS = Path(settings.BASE_DIR) / "static" / "css" / "site.css"


class PageOutline(HTMLParser):
    """What the tests look at in a page: headings, links and assets, and elements' text by id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.headings: list[tuple[int, str]] = []
        self.links: list[dict[str, str]] = []
        self.assets: list[str] = []
        self.elements: dict[str, dict[str, str]] = {}
        self.text_by_id: dict[str, str] = {}
        self.html_lang = ""
        self.start_tags: list[tuple[str, dict[str, str]]] = []
        self._open: list[tuple[str, str | None]] = []  # (tag, id) of elements we are inside
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.start_tags.append((tag, attributes))
        if tag == "html":
            self.html_lang = attributes.get("lang", "")
        if tag in ("script", "img", "iframe", "source", "audio", "video") and "src" in attributes:
            self.assets.append(attributes["src"])
        if tag == "link" and "href" in attributes:
            self.assets.append(attributes["href"])
        if tag == "a":
            self.links.append(attributes)
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = [tag]
        if "id" in attributes:
            self.elements[attributes["id"]] = {"tag": tag, **attributes}
            self.text_by_id[attributes["id"]] = ""
        if tag not in ("meta", "link", "br", "input", "img", "hr"):
            self._open.append((tag, attributes.get("id")))

    def handle_endtag(self, tag: str) -> None:
        if self._heading is not None and tag == self._heading[0]:
            self.headings.append((int(tag[1]), " ".join("".join(self._heading[1:]).split())))
            self._heading = None
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                del self._open[index:]
                break

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)
        for _tag, element_id in self._open:
            if element_id is not None:
                self.text_by_id[element_id] += data


def outline(html: str) -> PageOutline:
    parser = PageOutline()
    parser.feed(html)
    parser.close()
    return parser


def landing_html(client: Client) -> str:
    response = client.get("/")
    assert response.status_code == 200
    return response.content.decode()


# --- content ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_says_what_it_does_and_offers_signup_pricing_and_docs(client):
    page = outline(landing_html(client))
    assert page.headings[0] == (1, "Simulate FMUs over HTTP")
    sentence = page.text_by_id["product-sentence"]
    assert "upload" in sentence and "run" in sentence and "CSV" in sentence
    try_now = page.elements["try-now"]
    assert try_now["href"] == "/accounts/signup/"
    assert page.text_by_id["try-now"] == "Try now"
    hrefs = {link.get("href") for link in page.links}
    assert {"/pricing/", "/api/docs/", "/accounts/signup/"} <= hrefs
    headings = [text for _level, text in page.headings]
    assert "How paying works" in headings and "Documentation" in headings


@pytest.mark.django_db
def test_shows_the_real_price_the_token_lifetime_and_the_packs_on_sale(client, settings):
    settings.SIMULATION_PRICE_CENTS = 250
    settings.PAYMENT_TOKEN_TTL = 20 * 60
    CreditPack.objects.all().delete()
    # Credit is money: $25.00 of credit is 10 runs at $2.50.
    CreditPack.objects.create(name="Small", credit_cents=2500, price_cents=900)
    CreditPack.objects.create(name="Retired", credit_cents=99 * 250, price_cents=100, active=False)
    html = landing_html(client)
    page = outline(html)
    assert page.text_by_id["landing-price"] == "$2.50"
    assert "$25.00 of credit for $9.00" in html
    assert "$247.50" not in html
    assert "402 Payment Required" in html
    assert "Payment-Token: &lt;token&gt;" in html
    assert "valid for 20 minutes" in html


@pytest.mark.django_db
def test_the_curl_example_calls_this_sites_api(client, settings):
    settings.SITE_URL = "https://fmu.example.com/"
    example = outline(landing_html(client)).text_by_id["curl-example"]
    assert "API=https://fmu.example.com/api/v1\n" in example
    assert "$API/models" in example and "$API/simulations" in example
    assert "result?format=csv" in example
    # The example names its two inputs once each, so a reader (and the test below) changes
    # exactly those two lines.
    assert len(re.findall(r"^export FMU_GATEWAY_KEY=", example, re.MULTILINE)) == 1
    assert len(re.findall(r"^export FMU_FILE=", example, re.MULTILINE)) == 1
    assert "jq" not in example


# --- self-contained, accessible ------------------------------------------------------------


@pytest.mark.django_db
def test_makes_no_third_party_requests_and_serves_hashed_static_files(client):
    page = outline(landing_html(client))
    assert page.assets, "the page has no stylesheet?"
    for url in page.assets:
        assert url.startswith("/") and not url.startswith("//"), url
    stylesheets = [url for url in page.assets if url.endswith(".css")]
    for url in stylesheets:
        # whitenoise's manifest storage: content-hashed names, cacheable for ever
        assert re.fullmatch(r"/static/css/[a-z_]+\.[0-9a-f]{12}\.css", url), url
        response = client.get(url)
        assert response.status_code == 200, url
        assert "max-age=315360000" in response.headers["Cache-Control"]
    for link in page.links:
        href = link.get("href", "")
        assert not href.startswith(("http:", "https:", "//")), href


@pytest.mark.django_db
def test_is_responsive_and_its_structure_is_accessible(client):
    html = landing_html(client)
    page = outline(html)
    assert page.html_lang == "en"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert page.elements["main"]["tag"] == "main"
    levels = [level for level, _text in page.headings]
    assert levels.count(1) == 1 and levels[0] == 1
    for before, after in itertools.pairwise(levels):
        assert after <= before + 1, f"heading level jumps from h{before} to h{after}"
    example = page.elements["example-title"]
    assert example["tag"] == "h2"
    # Code blocks scroll sideways on narrow screens: keyboard users must reach them too.
    code_blocks = [attributes for tag, attributes in page.start_tags if tag == "pre"]
    assert code_blocks
    for attributes in code_blocks:
        assert attributes.get("tabindex") == "0" and attributes.get("aria-label"), attributes
    for link in page.links:
        assert link.get("href"), link


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[index : index + 2], 16) / 255 for index in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    lighter, darker = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_text_colours_meet_wcag_aa_contrast():
    colours = dict(re.findall(r"--([a-z]+):\s*(#[0-9a-fA-F]{6})", SITE_CSS.read_text()))
    code_background = "#f6f8fa"
    pairs = {
        "text": (colours["fg"], colours["bg"]),
        "muted text": (colours["muted"], colours["bg"]),
        "links": (colours["accent"], colours["bg"]),
        "button label": ("#ffffff", colours["accent"]),
        "code": (colours["fg"], code_background),
        "links on the code background": (colours["accent"], code_background),
        "the billing banner": (colours["fg"], colours["warn"]),
    }
    for name, (foreground, background) in pairs.items():
        assert contrast(foreground, background) >= 4.5, name


# --- acceptance: the example, verbatim, against a live server ---------------------------------


def personalised(example: str, *, key: str, fmu_file: Path) -> str:
    """The example with the reader's two edits: their key and their FMU. Nothing else changes."""
    edited, keys = re.subn(
        r"^export FMU_GATEWAY_KEY=\S+", f"export FMU_GATEWAY_KEY={key}", example, flags=re.M
    )
    edited, files = re.subn(
        r"^export FMU_FILE=\S+", f"export FMU_FILE='{fmu_file}'", edited, flags=re.M
    )
    assert (keys, files) == (1, 1)
    return edited


def run_the_example(server_url: str, *, key: str, fmu_file: Path, workdir: Path):
    """Render the landing page for this site, take its example and run it with bash."""
    with override_settings(SITE_URL=server_url):
        example = outline(landing_html(Client())).text_by_id["curl-example"]
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", personalised(example, key=key, fmu_file=fmu_file)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_the_result_arrived(finished, workdir: Path) -> None:
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert '"status":"succeeded"' in finished.stdout, finished.stdout
    rows = list(csv.reader(io.StringIO((workdir / "result.csv").read_text())))
    assert rows[0] == ["time", "h", "v"]
    assert len(rows) > 10
    assert float(rows[-1][0]) == pytest.approx(3.0)
    # the example ends by showing the table's first lines
    assert finished.stdout.rstrip().endswith("\n".join(",".join(row) for row in rows[:5]))


@pytest.mark.live
def test_the_landing_page_curl_example_works_verbatim_against_a_live_server(
    shared_gateway,
    fmu_paths,
    tmp_path,
):
    server = shared_gateway.server
    _api_key, key = api_key_create(user=UserFactory())

    finished = run_the_example(
        server.url, key=key, fmu_file=fmu_paths["bouncing_ball"], workdir=tmp_path
    )

    assert_the_result_arrived(finished, tmp_path)


@pytest.mark.live
@pytest.mark.stripe
def test_with_billing_on_the_example_runs_on_credit_and_shows_the_402_without(
    shared_billing_gateway,
    fake_stripe,
    fmu_paths,
    tmp_path,
):
    server = shared_billing_gateway.server
    user = UserFactory()
    _api_key, key = api_key_create(user=user)
    LedgerEntryFactory(user=user, amount_cents=100, reason="credit for the landing page example")

    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    paid = run_the_example(server.url, key=key, fmu_file=fmu_paths["bouncing_ball"], workdir=first)
    assert_the_result_arrived(paid, first)
    assert '"charge":{"kind":"credit"' in paid.stdout
    assert credit_balance(user=user) == 0

    # No credit left: step 2 stops the example and shows the 402 with its Checkout link.
    refused = run_the_example(
        server.url, key=key, fmu_file=fmu_paths["bouncing_ball"], workdir=second
    )
    assert refused.returncode != 0
    assert "'status': 402" in refused.stderr
    assert "https://checkout.stripe.com/c/pay/cs_test_" in refused.stderr
    assert not (second / "result.csv").exists()
