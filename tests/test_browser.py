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
TABS = ["Compare generation", "Compare classification", "Look inside", "Learn the idea", "Benchmarks"]
METHODS = ["ToMe", "L-GTM", "ToDo", "IE-KVD"]  # the method titles, in the app's order
LABELS = ["Baseline", "ToMe r=0.5", "L-GTM r=0.7", "ToDo s=2", "IE-KVD s=2 α=0.9"]  # the default settings
PLOT = "[data-testid=matplotlib] img"  # a gr.Plot(format="png") draws one PNG image
HEADER = "[role=columnheader] .header-content"  # a gr.Dataframe's column names
CELL = "[role=gridcell]"


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


def _quiet(*args: object, **kwargs: object) -> None:
    """A stand-in for gr.Progress when calling an event in-process."""


def test_page_shows_the_intro_the_five_tabs_and_the_generation_controls(page: Page) -> None:
    expect(page).to_have_title("BiGain: token compression that keeps generation and classification")
    expect(page.get_by_role("heading", level=1)).to_have_text("BiGain: faster diffusion models that still see")
    expect(page.get_by_role("tab")).to_have_text(TABS)
    expect(page.get_by_role("tab", name=TABS[0], exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#gen-model input")).to_have_value("Digits DiT (embedded, CPU)")
    choices = app.method_choices()  # every compressing method of the registry; the four of the paper checked
    methods = page.locator("#gen-methods").get_by_role("checkbox")
    expect(methods).to_have_count(len(choices))
    for method, (label, name) in zip(methods.all(), choices, strict=True):
        expect(method).to_have_accessible_name(label)
        if name in ("tome", "lgtm", "todo", "iekvd"):
            expect(method).to_be_checked()
        else:
            expect(method).not_to_be_checked()
    expect(page.locator("#gen-button")).to_have_text("Generate")
    expect(page.locator("#gen-summary [data-testid=markdown]")).to_contain_text("press Generate")


def test_generate_shows_every_method_against_the_baseline(page: Page) -> None:
    card = app.model(app.DEFAULT_MODEL).card
    panel = _open_tab(page, "Compare generation")
    page.locator("#gen-button").click()
    table = page.locator("#gen-table")
    columns = ["method", "latency (s)", "per denoiser call (ms)", "speed-up (×)", "GFLOPs / call",
               "FLOPs vs baseline", "mean |Δ| vs baseline"]  # fmt: skip
    expect(table.locator(HEADER)).to_have_text(columns, timeout=RUN_MS)
    expect(_column(table, 1)).to_have_text(LABELS)
    expect(_column(table, 4).first).to_have_text("1")  # the baseline's speed-up over itself
    expect(_column(table, 6)).to_have_text(["100%", *[re.compile(r"^\s*\d\d?%\s*$")] * 4])  # fewer FLOPs
    summary = page.locator("#gen-summary [data-testid=markdown]")
    run = rf"{re.escape(card.name)}, class 3, seed 0, \w+ {card.steps} steps, guidance {card.guidance:g}"
    expect(summary).to_contain_text(re.compile(rf"{run}: \d+ denoiser calls per image"))

    images = page.locator("#gen-gallery img")
    assert _expect_loaded(images, 5) == [256] * 5  # 16×16 digits enlarged ×16
    alts = _alts(images)
    assert alts[0] == "Baseline" and [a.split(" ×")[0] for a in alts[1:]] == METHODS
    assert all(re.fullmatch(r".+ ×\d+\.\d\d", a) for a in alts[1:]), alts  # caption: the speed-up
    diffs = page.locator("#gen-diff img")
    assert _expect_loaded(diffs, 4) == [256] * 4
    assert _alts(diffs) == METHODS
    _expect_plots(panel.locator(PLOT), 1)  # speed-up and FLOPs per method
    _screenshot(page, "browser_generate.png")


def test_classify_an_example_digit_shows_the_top5_of_every_method_and_the_evidence(page: Page) -> None:
    panel = _open_tab(page, "Compare classification")
    examples = page.locator("#cls-examples").get_by_role("button")
    expect(examples).to_have_text([f"digit {i}" for i in range(10)])
    examples.nth(3).click()
    _expect_loaded(page.locator("#cls-image img"), 1)
    page.locator("#cls-button").click()
    table = page.locator("#cls-table")
    expect(table.locator(HEADER)).to_have_text(["rank", *LABELS], timeout=RUN_MS)
    expect(_column(table, 1)).to_have_text([str(r) for r in range(1, 6)])
    for col in range(2, 2 + len(LABELS)):
        expect(_column(table, col)).to_have_text([re.compile(r"^\s*\d \(\d\.\d\d\)\s*$")] * 5)  # class (score)
    # the very table the event gives for this image and these settings (scores do not depend on timing)
    want, _, _ = app.classify(app.DEFAULT_MODEL, explain.digit_examples()[3][0], "", ["tome", "lgtm", "todo", "iekvd"],
                              rounds=1, progress=_quiet)  # fmt: skip
    assert _rows(table) == want.astype(str).values.tolist()
    summary = page.locator("#cls-summary [data-testid=markdown]")
    expect(summary.locator("p").first).to_contain_text("predict")
    expect(summary.get_by_role("listitem")).to_have_text(
        [re.compile(rf"^\s*{re.escape(label)}: \d+ \(class, timestep\) evaluations in \d+ batched") for label in LABELS]
    )
    _expect_plots(panel.locator(PLOT), 1)  # the per-class denoising errors
    _screenshot(page, "browser_classify.png")


def test_look_inside_records_a_generation_and_redraws_for_another_block(page: Page) -> None:
    steps = app.model(app.DEFAULT_MODEL).card.steps
    _open_tab(page, "Look inside")
    block = page.get_by_label("Block", exact=True)
    expect(block).to_be_disabled()  # nothing recorded yet
    page.locator("#inside-button").click()
    plots = page.locator(f"#inside-plots {PLOT}")
    expect(plots).to_have_count(2, timeout=RUN_MS)  # L-GTM: the gate and the merge groups; no KV panel
    _expect_plots(plots, 2)
    assert _expect_loaded(page.locator("#inside-plots .image-frame img"), 1) == [256]  # the result
    caption = page.locator("#inside-plots [data-testid=markdown]")
    expect(caption).to_contain_text(f"step 1 of {steps}")
    expect(caption).to_contain_text("block 1")
    step = page.get_by_role("slider", name="range slider for Denoising step")
    expect(step).to_be_enabled()
    expect(step).to_have_attribute("max", str(steps))  # one position per recorded step

    gate = plots.first.get_attribute("src")
    expect(block).to_be_enabled()
    block.click()
    page.get_by_role("option", name="block 2", exact=True).click()
    expect(caption).to_contain_text("block 2")
    expect(caption).to_contain_text(f"step 1 of {steps}")
    expect(plots.first).not_to_have_attribute("src", gate)  # another block's Laplacian energy
    _expect_plots(plots, 2)
    _screenshot(page, "browser_inside.png")


def test_learn_tab_draws_its_three_figures_and_redraws_them_for_another_grid(page: Page) -> None:
    panel = _open_tab(page, "Learn the idea")
    expect(page.locator("#learn-plots").get_by_role("heading")).to_have_text(
        ["1. Low and high frequencies", "2. Which tokens each method keeps", "3. Nearest, average and the α-blend"]
    )
    plots = page.locator(f"#learn-plots {PLOT}")
    _expect_plots(plots, 3)  # drawn on page load for the first example
    before = plots.evaluate_all("imgs => imgs.map(i => i.src)")
    grid = panel.get_by_label("8", exact=True)  # "Token grid (tokens per side)"
    grid.check()
    expect(grid).to_be_checked()
    for i in range(2):  # the token split and the kept tokens change with the grid
        expect(plots.nth(i)).not_to_have_attribute("src", before[i])
    _expect_plots(plots, 3)
    _screenshot(page, "browser_learn.png")


def test_benchmarks_tab_shows_the_recorded_report_and_its_plots(page: Page) -> None:
    text, plots = app.benchmarks()
    heading = next(line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#"))
    panel = _open_tab(page, "Benchmarks")
    expect(panel.get_by_role("heading").first).to_have_text(re.sub(r"[`*]", "", heading))
    images = panel.locator("img")
    _expect_loaded(images, len(plots))
    assert _alts(images) == [caption for _, caption in plots]
    _screenshot(page, "browser_benchmarks.png")
