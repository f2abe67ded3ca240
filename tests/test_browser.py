"""The app in a real browser: Playwright drives Debian's headless Chromium (``/usr/bin/chromium``; no
``playwright install``, nothing is downloaded). Every wait is for content on the page, and every test
asserts what the page shows. Screenshots of the final states go to artifacts/ for people to look at."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import app
from bigain import explain
from bigain.ui import common, knobs

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # MISSING below says so
    sync_playwright = None

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = (
    "playwright is not installed (pip install -r requirements-dev.txt)" if sync_playwright is None
    else "chromium is not installed (apt-get install -y chromium)" if CHROMIUM is None
    else None
)  # fmt: skip
if MISSING and not os.environ.get("CI"):  # under CI a missing piece fails every test instead
    pytest.skip(MISSING, allow_module_level=True)


pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
RUN_MS = 120_000  # a model run from a button click (CPU, every method, timing rounds)
TABS = app.TABS
METHODS = ["ToMe", "L-GTM", "ToDo", "IE-KVD"]  # the method titles, in the app's order
LABELS = ["Baseline", "ToMe r=0.5", "L-GTM r=0.7", "ToDo s=2", "IE-KVD s=2 α=0.9"]  # the default settings
PLOT = "[data-testid=matplotlib] img"  # a gr.Plot(format="png") draws one PNG image
HEADER = "[role=columnheader] .header-content"  # a gr.Dataframe's column names
CELL = "[role=gridcell]"
SAMPLES = 4  # samples per method, the app's default


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if MISSING:
        pytest.fail(MISSING)
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser, app_url: str) -> Iterator[Page]:
    """A fresh tab on the app (tests/conftest.py serves it), loaded; fails on any uncaught page error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(app_url)
        expect(page.get_by_role("tab", name=TABS[0], exact=True)).to_be_visible(timeout=60_000)
        yield page
        assert not errors, f"uncaught errors in the page: {errors}"
    finally:
        context.close()


def _open_tab(page: Page, label: str) -> Locator:
    """Click a tab; the panel it shows (only the shown panel is in the accessibility tree)."""
    tab = page.get_by_role("tab", name=label, exact=True)
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")
    panel = page.get_by_role("tabpanel")
    expect(panel).to_have_count(1)
    return panel


def _expect_loaded(images: Locator, count: int) -> list[int]:
    """``count`` images, each decoded with a non-zero size (lazy ones scrolled to); their natural widths."""
    expect(images).to_have_count(count)
    for i in range(count):
        image = images.nth(i)
        image.scroll_into_view_if_needed()
        expect(image).to_have_js_property("complete", True)
        expect(image).not_to_have_js_property("naturalWidth", 0)
    return images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")


def _expect_plots(plots: Locator, count: int) -> None:
    expect(plots).to_have_count(count)
    for i in range(count):
        expect(plots.nth(i)).to_have_attribute("src", re.compile(r"^data:image/png;base64,."))
    _expect_loaded(plots, count)


def _column(table: Locator, index: int) -> Locator:
    return table.locator(f"{CELL}[aria-colindex='{index}']")


def _rows(table: Locator) -> list[list[str]]:
    rows = table.get_by_role("row").filter(has=table.page.locator(CELL))
    return [[c.strip() for c in row.locator(CELL).all_inner_texts()] for row in rows.all()]


def _alts(images: Locator) -> list[str]:
    return images.evaluate_all("imgs => imgs.map(i => i.alt)")


def _screenshot(page: Page, name: str) -> None:
    """For people, not an assertion."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


def _no_error_anywhere(page: Page) -> None:
    """No error toast and no component in its error state ("Error" badge) on the page."""
    expect(page.locator(".toast-body.error, .toast-wrap .error")).to_have_count(0)
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)


def test_page_shows_the_intro_the_five_tabs_and_the_generation_controls(page: Page) -> None:
    expect(page).to_have_title(app.TITLE)
    expect(page.get_by_role("heading", level=1)).to_have_text("BiGain: faster diffusion models that still see")
    expect(page.get_by_role("tab")).to_have_text(TABS)
    expect(page.get_by_role("tab", name=TABS[0], exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#gen-model input")).to_have_value("digits-dit (embedded, CPU)")
    choices = app.method_choices()  # every compressing method of the registry; the four of the paper checked
    methods = page.locator("#gen-methods").get_by_role("checkbox")
    expect(methods).to_have_count(len(choices))
    for method, (label, name) in zip(methods.all(), choices, strict=True):
        expect(method).to_have_accessible_name(label)
        if name in ("tome", "lgtm", "todo", "iekvd"):
            expect(method).to_be_checked()
        else:
            expect(method).not_to_be_checked()
    page.locator("#gen-settings").get_by_text("Method settings").click()  # the registry's knobs, unfolded
    settings = page.locator("#gen-settings")
    expect(settings.get_by_role("slider", name="range slider for ToMe merge ratio")).to_have_value("0.5")
    expect(settings.get_by_role("textbox", name=re.compile(r"^IE-KVD α at t = 0"))).to_have_value("none")
    expect(page.locator("#gen-button")).to_have_text("Generate")
    _no_error_anywhere(page)


def test_every_tab_shows_a_finished_example_on_arrival(page: Page) -> None:
    panel = _open_tab(page, "Compare generation")
    expect(page.locator("#gen-summary")).to_contain_text("samples per method")
    _expect_loaded(page.locator("#gen-gallery img"), 5 * SAMPLES)
    _expect_loaded(page.locator("#gen-slider img"), 2)
    expect(_column(page.locator("#gen-table"), 1)).to_have_text(LABELS)
    expect(page.locator("#gen-quality")).to_contain_text("digits evaluation")
    _expect_plots(panel.locator(PLOT), 2)  # differences with their colour bar, speed
    _screenshot(page, "browser_arrival_generate.png")
    panel = _open_tab(page, "Compare classification")
    expect(page.locator("#cls-table").locator(HEADER)).to_have_text(["rank", *LABELS])
    _expect_plots(panel.locator(PLOT), 1)
    panel = _open_tab(page, "Look inside")
    steps = app.model(app.DEFAULT_MODEL).card.steps
    expect(page.locator("#inside-caption")).to_contain_text(f"step {(steps + 1) // 2} of {steps}")  # the middle
    _expect_plots(page.locator(f"#inside-plots {PLOT}"), 2)
    _screenshot(page, "browser_arrival_inside.png")
    _open_tab(page, "Learn the idea")
    _expect_plots(page.locator(f"#learn-plots {PLOT}"), 4)
    expect(page.locator("#learn-examples").get_by_role("button")).to_contain_text(["astronaut", "coffee"])
    _screenshot(page, "browser_learn.png")
    panel = _open_tab(page, "Benchmarks")
    expect(panel.get_by_role("heading").first).to_have_text("Headline")
    expect(page.locator("#bench-headline")).to_contain_text("ceiling")
    _expect_loaded(page.locator("#bench-gallery img"), len(app.benchmarks()[1]))
    _screenshot(page, "browser_benchmarks.png")
    _no_error_anywhere(page)


def test_generate_round_trip(page: Page) -> None:
    panel = _open_tab(page, "Compare generation")
    page.get_by_label("Steps", exact=True).first.fill("4")
    page.locator("#gen-button").click()
    summary = page.locator("#gen-summary")
    expect(summary).to_contain_text(re.compile(r"DDIM 4 steps, guidance [\d.]+: \d+ denoiser calls"), timeout=RUN_MS)
    table = page.locator("#gen-table")
    expect(_column(table, 1)).to_have_text(LABELS)
    expect(_column(table, 4).first).to_have_text("1")  # the baseline's speed-up over itself
    images = page.locator("#gen-gallery img")
    assert _expect_loaded(images, 5 * SAMPLES) == [128] * 5 * SAMPLES  # 16×16 digits enlarged ×8
    alts = [a.split(" · ")[0] for a in _alts(images)[::SAMPLES]]  # the first sample of every method
    assert alts[0] == "Baseline" and [a.split(" ×")[0] for a in alts[1:]] == METHODS
    _expect_loaded(page.locator("#gen-slider img"), 2)
    _expect_plots(panel.locator(PLOT), 2)
    _no_error_anywhere(page)
    _screenshot(page, "browser_generate.png")


def test_classify_round_trip_on_an_example_digit(page: Page) -> None:
    panel = _open_tab(page, "Compare classification")
    examples = page.locator("#cls-examples").get_by_role("button")
    expect(examples).to_have_text([f"digit {i}" for i in range(10)])
    shown = page.locator("#cls-image img")
    _expect_loaded(shown, 1)  # the start-up example, a 3
    before = shown.get_attribute("src")
    examples.nth(7).click()
    expect(shown).not_to_have_attribute("src", before)
    _expect_loaded(shown, 1)
    page.locator("#cls-classes").get_by_role("textbox").fill("1, 7")
    page.locator("#cls-button").click()
    table = page.locator("#cls-table")
    expect(_column(table, 2)).to_have_text([re.compile(r"^\s*[17] \(\d\.\d\d\)\s*$")] * 2 + [""] * 3,
                                           timeout=RUN_MS)  # fmt: skip
    want, _, _ = app.classify(app.DEFAULT_MODEL, explain.digit_examples()[7][0], "1, 7", list(knobs.PAPER),
                              rounds=1)  # fmt: skip
    assert _rows(table) == want.astype(str).values.tolist()
    expect(page.locator("#cls-summary").get_by_role("listitem")).to_have_count(len(LABELS))
    _expect_plots(panel.locator(PLOT), 1)
    _no_error_anywhere(page)
    _screenshot(page, "browser_classify.png")


def test_an_unavailable_model_says_how_to_get_it_and_stays_usable(page: Page) -> None:
    if common.available("sd2-base"):
        pytest.skip("sd2-base is in this machine's Hugging Face cache")
    _open_tab(page, "Compare generation")
    page.locator("#gen-model input").click()
    page.get_by_role("option", name="sd2-base (hub, GPU · not downloaded)").click()
    note = page.locator("#gen-model-note")
    expect(note).to_contain_text("hf download stabilityai/stable-diffusion-2-base")
    expect(page.locator("#gen-button")).to_be_disabled()
    _no_error_anywhere(page)
    _screenshot(page, "browser_unavailable.png")
    page.locator("#gen-model input").click()
    page.get_by_role("option", name="digits-unet (embedded, CPU)").click()
    expect(page.locator("#gen-button")).to_be_enabled()
    expect(note).to_be_hidden()
    _no_error_anywhere(page)


def test_look_inside_walks_to_another_block(page: Page) -> None:
    _open_tab(page, "Look inside")
    plots = page.locator(f"#inside-plots {PLOT}")
    _expect_plots(plots, 2)
    gate = plots.first.get_attribute("src")
    caption = page.locator("#inside-caption")
    page.locator("#inside-block input").click()
    page.get_by_role("option", name="block 2", exact=True).click()
    expect(caption).to_contain_text("block 2")
    expect(plots.first).not_to_have_attribute("src", gate)
    _no_error_anywhere(page)
