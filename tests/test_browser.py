"""The app in a real browser: Playwright drives Debian's headless Chromium (``/usr/bin/chromium``; no
``playwright install``, nothing is downloaded). Every wait is for content on the page, and every test
asserts what the page shows. Screenshots of the final states go to artifacts/ for people to look at.

The page opens on glyphs-dit (26 capitals, 32×32). What each model tab shows on arrival depends on what the
assets folder holds: the precomputed example (``python -m bigain.ui.examples`` → ``assets/examples/``), or,
without it, a note naming that command; without the trained weights, a note on training them."""

from __future__ import annotations

import importlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import app
from bigain.explain.bundled import digits_quality, world_examples
from bigain.ui import common, knobs

try:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # MISSING below says so
    sync_playwright = None
    PlaywrightError = Exception

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = (
    "playwright is not installed (pip install -r requirements-dev.txt)" if sync_playwright is None
    else "chromium is not installed (apt-get install -y chromium)" if CHROMIUM is None
    else None
)  # fmt: skip
if MISSING and not os.environ.get("CI"):  # under CI a missing piece fails every test instead
    pytest.skip(MISSING, allow_module_level=True)


pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
RUN_MS = 240_000  # a model run from a button click (CPU, every method, a timing round)
TABS = app.TABS
MODEL = app.DEFAULT_MODEL  # glyphs-dit: the capitals A–Z at 32×32
LETTERS = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
METHODS = ["ToMe", "L-GTM"]  # the method titles checked when the page opens, in the app's order
LABELS = ["Baseline", "ToMe r=0.5", "L-GTM r=0.7"]  # the baseline and those methods at their default settings
PLOT = "[data-testid=matplotlib] img"  # a gr.Plot(format="png") draws one PNG image
HEADER = "[role=columnheader] .header-content"  # a gr.Dataframe's column names
CELL = "[role=gridcell]"
SAMPLES = 2  # samples per method, the app's default
SHOWN = 128  # pixels a side a sample is drawn at: a 32×32 glyph ×4
STEPS = 20  # the glyph card's sampling steps: Look inside opens at the middle one, step 10 of 20
TRAINED = common.available(MODEL)  # the default model's weights are in the assets folder
NOT_TRAINED = f"{MODEL} is not trained here: python -m bigain train {MODEL}, then python -m bigain.ui.examples"


def _arrival() -> dict[str, str]:
    """Per model tab, the note the page was built with when it has no precomputed example ("" when it has
    one): the tabs' own start-up (cached, so the very result the page shows)."""
    tabs = {tab: importlib.import_module(f"bigain.ui.{tab}") for tab in ("generate", "classify", "inside")}
    return {tab: module.startup()[-1] for tab, module in tabs.items()}


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
        _scroll_to(image)
        expect(image).to_have_js_property("complete", True)
        expect(image).not_to_have_js_property("naturalWidth", 0)
    return images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")


def _scroll_to(image: Locator) -> None:
    """Scroll an image into view (a lazy one loads then). A figure an event just drew can be drawn again
    at once (Look inside: the recording sets the block, whose change redraws the figures), which detaches
    the element being scrolled to; the locator then finds the new one."""
    for attempt in range(3):
        try:
            image.scroll_into_view_if_needed()
            return
        except PlaywrightError:
            if attempt == 2:
                raise


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


def _runs(images: Locator) -> list[str]:
    """The run of the first sample of every method, from the gallery's captions ("ToMe ×1.08 · 1")."""
    return [a.split(" · ")[0].split(" ×")[0] for a in _alts(images)[::SAMPLES]]


def _screenshot(page: Page, name: str) -> None:
    """For people, not an assertion."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


def _no_error_anywhere(page: Page) -> None:
    """No error toast and no component in its error state ("Error" badge) on the page."""
    expect(page.locator(".toast-body.error, .toast-wrap .error")).to_have_count(0)
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)


def _quality(page: Page) -> None:
    """The quality panel: the model's evaluation for these settings, or a line saying there is none yet."""
    quality = page.locator("#gen-quality")
    if digits_quality(common.ROOT / "assets", MODEL):  # assets/eval/glyphs-dit.json
        expect(quality).to_contain_text(f"Quality of these settings in the glyphs evaluation of {MODEL}")
        expect(quality.get_by_role("row")).to_have_count(1 + len(LABELS))
    else:
        expect(quality).to_contain_text(f"No evaluation of {MODEL} yet")
        expect(quality).to_contain_text("python -m bigain eval glyphs")


def _expect_note(where: Locator, button: str) -> None:
    """A tab without its precomputed example says why, names the command that writes it (or, without
    weights, that there are none) and what its button does."""
    if TRAINED:
        expect(where).to_contain_text("python -m bigain.ui.examples")
    else:
        expect(where).to_contain_text(f"{MODEL} has no trained weights here")
    expect(where).to_contain_text(f"Press {button}")


def _need_weights() -> None:
    if not TRAINED:
        pytest.skip(NOT_TRAINED)


def test_page_shows_the_intro_the_five_tabs_and_the_generation_controls(page: Page) -> None:
    expect(page).to_have_title(app.TITLE)
    expect(page.get_by_role("heading", level=1)).to_have_text("BiGain: faster diffusion models that still see")
    expect(page.get_by_role("tab")).to_have_text(TABS)
    expect(page.get_by_role("tab", name=TABS[0], exact=True)).to_have_attribute("aria-selected", "true")
    state = "" if TRAINED else " · not trained"
    expect(page.locator("#gen-model input")).to_have_value(f"{MODEL} (embedded, CPU{state})")
    expect(page.locator("#gen-condition input")).to_have_value("D")  # a capital: the glyph world's classes
    choices = app.method_choices()  # every compressing method of the registry; ToMe and L-GTM checked
    methods = page.locator("#gen-methods").get_by_role("checkbox")
    expect(methods).to_have_count(len(choices))
    for method, (label, name) in zip(methods.all(), choices, strict=True):
        expect(method).to_have_accessible_name(label)
        if name in ("tome", "lgtm"):
            expect(method).to_be_checked()
        else:
            expect(method).not_to_be_checked()
    expect(page.get_by_role("slider", name="range slider for Samples per method")).to_have_value(str(SAMPLES))
    expect(page.get_by_role("slider", name="range slider for Timing rounds")).to_have_value("1")
    expect(page.get_by_label("Steps", exact=True).first).to_have_value(str(STEPS))
    page.locator("#gen-settings").get_by_text("Method settings").click()  # the registry's knobs, unfolded
    settings = page.locator("#gen-settings")
    expect(settings.get_by_role("slider", name="range slider for ToMe merge ratio")).to_have_value("0.5")
    expect(settings.get_by_role("textbox", name=re.compile(r"^IE-KVD α at t = 0"))).to_have_value("none")
    expect(page.locator("#gen-button")).to_have_text("Generate")
    if TRAINED:
        expect(page.locator("#gen-button")).to_be_enabled()
        expect(page.locator("#gen-model-note")).to_be_hidden()
    else:
        expect(page.locator("#gen-button")).to_be_disabled()
        expect(page.locator("#gen-model-note")).to_contain_text(f"python -m bigain train {MODEL}")
    _no_error_anywhere(page)


def test_every_tab_shows_a_finished_example_on_arrival(page: Page) -> None:
    """The precomputed example in every model tab (no model ran to show it), or the note saying how to
    write it when assets/examples does not have it; the Learn and Benchmarks tabs in any case."""
    notes = _arrival()
    panel = _open_tab(page, "Compare generation")
    summary = page.locator("#gen-summary")
    if not notes["generate"]:
        expect(summary).to_contain_text(f"{MODEL}, class D, seed 0, {SAMPLES} samples per method")
        expect(summary).to_contain_text(f"DDIM {STEPS} steps")
        expect(summary).to_contain_text(re.compile(r"Precomputed example \([^,]+, \d+ threads?, \d timing rounds?;"))
        expect(summary).to_contain_text("press Generate to measure on this machine")
        images = page.locator("#gen-gallery img")
        assert _expect_loaded(images, len(LABELS) * SAMPLES) == [SHOWN] * len(LABELS) * SAMPLES
        assert _runs(images) == ["Baseline", *METHODS]
        _expect_loaded(page.locator("#gen-slider img"), 2)
        expect(_column(page.locator("#gen-table"), 1)).to_have_text(LABELS)
        _quality(page)
        _expect_plots(panel.locator(PLOT), 2)  # differences with their colour bar, speed
    else:
        _expect_note(summary, "Generate")
        expect(page.locator("#gen-gallery img")).to_have_count(0)
        expect(panel.locator(PLOT)).to_have_count(0)
    _screenshot(page, "browser_arrival_generate.png")
    panel = _open_tab(page, "Compare classification")
    _expect_loaded(page.locator("#cls-image img"), 1)  # the example's input, a D of a held-out font
    if not notes["classify"]:
        expect(page.locator("#cls-table").locator(HEADER)).to_have_text(["rank", *LABELS])
        expect(_column(page.locator("#cls-table"), 2).first).to_have_text(re.compile(r"^\s*[A-Z] \(\d\.\d\d\)\s*$"))
        expect(page.locator("#cls-summary")).to_contain_text("Precomputed example")
        expect(page.locator("#cls-summary").get_by_role("listitem")).to_have_count(len(LABELS))
        _expect_plots(panel.locator(PLOT), 1)
    else:
        _expect_note(page.locator("#cls-summary"), "Classify")
        expect(panel.locator(PLOT)).to_have_count(0)
    _screenshot(page, "browser_arrival_classify.png")
    panel = _open_tab(page, "Look inside")
    caption = page.locator("#inside-caption")
    if not notes["inside"]:
        expect(caption).to_contain_text(f"step {(STEPS + 1) // 2} of {STEPS}")  # the middle of the card's 20
        expect(caption).to_contain_text("block 1")
        _expect_plots(page.locator(f"#inside-plots {PLOT}"), 2)  # L-GTM: gate and merge groups, no KV
    else:
        _expect_note(caption, "Generate and record")
        expect(page.locator(f"#inside-plots {PLOT}")).to_have_count(0)
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
    _need_weights()
    panel = _open_tab(page, "Compare generation")
    page.get_by_label("Steps", exact=True).first.fill("4")
    page.locator("#gen-button").click()
    summary = page.locator("#gen-summary")
    expect(summary).to_contain_text(re.compile(r"DDIM 4 steps, guidance [\d.]+: \d+ denoiser calls"), timeout=RUN_MS)
    expect(summary).to_contain_text(f"{MODEL}, class D, seed 0, {SAMPLES} samples per method")
    expect(summary).to_contain_text(re.compile(r"Times measured in this run on this machine \([^,]+, \d+ threads?\)"))
    table = page.locator("#gen-table")
    expect(_column(table, 1)).to_have_text(LABELS)
    expect(_column(table, 4).first).to_have_text("1")  # the baseline's speed-up over itself
    images = page.locator("#gen-gallery img")
    assert _expect_loaded(images, len(LABELS) * SAMPLES) == [SHOWN] * len(LABELS) * SAMPLES  # 32×32 glyphs ×4
    assert _runs(images) == ["Baseline", *METHODS]
    _expect_loaded(page.locator("#gen-slider img"), 2)
    _expect_plots(panel.locator(PLOT), 2)
    _quality(page)
    _no_error_anywhere(page)
    _screenshot(page, "browser_generate.png")


def test_classify_round_trip_on_an_example_letter(page: Page) -> None:
    _need_weights()
    panel = _open_tab(page, "Compare classification")
    examples = page.locator("#cls-examples").get_by_role("button")
    expect(examples).to_have_text(LETTERS)  # a letter of every class from the held-out test fonts
    expect(page.locator("#cls-examples-1").get_by_role("button")).to_have_text([str(i) for i in range(10)])
    shown = page.locator("#cls-image img")
    _expect_loaded(shown, 1)  # the start-up example, a D
    before = shown.get_attribute("src")
    examples.nth(4).click()  # E
    expect(shown).not_to_have_attribute("src", before)
    _expect_loaded(shown, 1)
    page.locator("#cls-classes").get_by_role("textbox").fill("E, F")
    page.locator("#cls-button").click()
    table = page.locator("#cls-table")
    expect(_column(table, 2)).to_have_text([re.compile(r"^\s*[EF] \(\d\.\d\d\)\s*$")] * 2 + [""] * 3,
                                           timeout=RUN_MS)  # fmt: skip
    expect(table.locator(HEADER)).to_have_text(["rank", *LABELS])
    want, _, _ = app.classify(MODEL, world_examples("glyphs")[4][0], "E, F", list(knobs.CLASSIFY),
                              rounds=1)  # fmt: skip
    assert _rows(table) == want.astype(str).values.tolist()
    summary = page.locator("#cls-summary")
    expect(summary.get_by_role("listitem")).to_have_count(len(LABELS))
    expect(summary).to_contain_text(re.compile(r"Times measured in this run on this machine \([^,]+, \d+ threads?\)"))
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
    expect(page.locator("#gen-condition input")).to_have_value("3")  # the digits' classes now
    _no_error_anywhere(page)


def test_look_inside_walks_to_another_block(page: Page) -> None:
    _open_tab(page, "Look inside")
    plots = page.locator(f"#inside-plots {PLOT}")
    caption = page.locator("#inside-caption")
    if _arrival()["inside"]:  # no precomputed recording: the first click records one
        _need_weights()
        page.locator("#inside-button").click()
    expect(caption).to_contain_text(f"step {(STEPS + 1) // 2} of {STEPS}", timeout=RUN_MS)  # the card's 20 steps
    _expect_plots(plots, 2)
    gate = plots.first.get_attribute("src")
    page.locator("#inside-block input").click()
    page.get_by_role("option", name="block 2", exact=True).click()
    expect(caption).to_contain_text("block 2")
    expect(caption).to_contain_text(f"step {(STEPS + 1) // 2} of {STEPS}")  # the same step, another block
    expect(plots.first).not_to_have_attribute("src", gate)
    _no_error_anywhere(page)


@pytest.mark.parametrize(
    "tab, button", [("Compare generation", "#gen-button"), ("Compare classification", "#cls-button"),
                    ("Look inside", "#inside-button")],
)  # fmt: skip
def test_each_model_tabs_button_is_on_the_first_screen_at_1400x900(page: Page, tab: str, button: str) -> None:
    page.set_viewport_size({"width": 1400, "height": 900})
    try:
        _open_tab(page, tab)
        page.evaluate("window.scrollTo(0, 0)")
        box = page.locator(button).bounding_box()
        assert box is not None and box["y"] + box["height"] <= 900, (tab, box)  # no scrolling to reach it
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
