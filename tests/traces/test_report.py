"""The HTML trace viewer (coevolve/traces/report.py): page contents, escaping, image modes, the
live server, and the page itself in headless Chromium (console, filters, pagination, a screenshot).

The browser tests need Debian's `chromium` and `chromium-driver` (`.ci/run` installs them) and
`selenium` (the `test` extra); without them they fail, saying so. With COEVOLVE_SCREENSHOT_DIR set
the report's screenshot is also copied to `$COEVOLVE_SCREENSHOT_DIR/report.png`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from coevolve.traces import report
from coevolve.traces.store import TraceStore, TraceWriter
from coevolve.traces.synthetic import SHAPES_PROGRAMS, _images, synthetic_rows

XSS = "<script>window.__pwned=1</script><b>x</b>"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
METRICS = [
    {"step": 0, "eval/image_accuracy": 0.05, "eval/image_accuracy/counting": 0.0, "eval/verdict_accuracy_own/p_yes": 0.5},
    *(
        {
            "step": step, "stage": "coevolve", "introspective/reward/format/mean": 0.5 + 0.1 * step,
            "introspective/reward/image_alignment/mean": 0.1 * step, "learner/clip_ratio/region_mean": 0.01,
            "learner/kl": 0.01 * step, "learner/entropy/text": 0.5, "learner/entropy/image": 0.4,
            "learner/brand_new_metric": 1.0, "learner/flag": True,
        }
        for step in (1, 2, 3)
    ),
]  # fmt: skip


def make_run(root: Path, steps: int = 3, rows: int = 48, metrics: list[dict] | None = METRICS) -> Path:
    """A run dir RUN/rl/traces (the shapes programs' store) + RUN/rl/metrics.jsonl; the first group
    of step 1 has `XSS` as its prompt and plan and a newline in its verdict."""
    run = root / "run"
    store = run / "rl" / "traces"
    writer = TraceWriter(store, {"test": True}, programs=SHAPES_PROGRAMS)
    images = _images(store)
    for step in range(1, steps + 1):
        batch = synthetic_rows(step, rows, seed=0, images=images)
        if step == 1:
            for row in batch[:4]:
                row.update(prompt=XSS, plan=" " + XSS)
        writer.write_step(step, batch)
    if metrics is not None:
        (run / "rl" / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
    return run


def embedded(html: str, element_id: str):
    found = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, re.DOTALL)
    assert found, element_id
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("traces"))


def test_report_holds_every_row_and_escapes_texts(run, tmp_path):
    out = report.write_report(run, tmp_path / "report.html")
    html = out.read_text()
    data = embedded(html, "trace-data")
    assert len(data["rows"]) == 3 * 48 and len(data["groups"]) == 3 * 48 // 4
    assert data["terms"] == ["image_alignment", "final_alignment", "self_consistency", "format", "reconstruction"]
    assert {"plan", "verdict", "reflection", "caption"} <= set(data["texts"])
    assert [name for name, _ in data["images"]][:1] == ["image"] and "regen_image" in dict(data["images"])
    # The prompt survives as data, and nowhere as markup: `tojson` escapes every `<`.
    assert XSS not in html and "window.__pwned" in html
    prompts = {row[data["cols"].index("prompt")] for row in data["rows"]}
    assert XSS in prompts
    # Groups are contiguous runs of rows, sorted by step then group.
    keys = [(row[data["cols"].index("step")], row[data["cols"].index("group")]) for row in data["rows"]]
    assert keys == sorted(keys)
    assert all(keys[a] == keys[b - 1] for _, _, a, b in data["groups"])


def test_aha_marks_are_the_store_query(run, tmp_path):
    store = TraceStore.open(run)
    frame = store.frame()
    marks, note = report.aha_mask(store, frame)
    expected = set(store.query(named=["aha"])["id"])
    assert expected and set(frame["id"][marks]) == expected
    data = embedded(report.write_report(run, tmp_path / "r.html").read_text(), "trace-data")
    cols = data["cols"]
    assert {row[cols.index("id")] for row in data["rows"] if row[cols.index("aha")]} == expected
    assert "regenerated" in note


def test_metric_panels_are_picked_by_pattern():
    figures = {figure["title"]: figure for figure in report.metric_figures(METRICS)}
    names = {
        title.split(":")[0]: {trace["name"]: trace.get("visible", True) for trace in f["data"]}
        for title, f in figures.items()
    }
    assert names["Reward terms (batch mean)"] == {
        "introspective/reward/format/mean": True, "introspective/reward/image_alignment/mean": True}  # fmt: skip
    # A per-category breakdown starts hidden; its top-level key shows.
    assert names["Verifier-judged accuracy (eval)"] == {
        "eval/image_accuracy": True,
        "eval/image_accuracy/counting": "legendonly",
    }
    assert names["Verdict accuracy (eval)"] == {"eval/verdict_accuracy_own/p_yes": True}
    assert names["Clip fraction"] == {"learner/clip_ratio/region_mean": True}
    assert names["KL"] == {"learner/kl": True}
    assert names["Entropy"] == {"learner/entropy/image": True, "learner/entropy/text": True}
    # A key no panel names is still plotted (hidden until clicked); booleans and strings are not numbers.
    assert names["Other metrics"] == {"learner/brand_new_metric": "legendonly"}
    assert figures[next(t for t in figures if t.startswith("Other"))]["lazy"]
    kl = next(trace for trace in figures["KL"]["data"])
    assert kl["x"] == [1, 2, 3] and kl["y"] == pytest.approx([0.01, 0.02, 0.03])


def test_plotly_travels_inert_and_whole(run, tmp_path):
    html = report.write_report(run, tmp_path / "r.html").read_text()
    found = re.search(r'<script type="text/plain" id="plotly-src">(.*?)</script>', html, re.DOTALL)
    assert found and "<" not in found.group(1)
    assert html.count("</script>") == 4  # trace data, figures, report.js, plotly: nothing closed early
    decoded = re.sub("%(25|3C|0D|00)", lambda m: chr(int(m.group(1), 16)), found.group(1))  # as report.js does
    from plotly.offline import get_plotlyjs

    assert decoded == get_plotlyjs()
    tricky = "a<b%3C</script><!--<script>%%\r\n\x00"
    inert = report._inert(tricky)
    assert "<" not in inert and "\r" not in inert and "\x00" not in inert
    assert re.sub("%(25|3C|0D|00)", lambda m: chr(int(m.group(1), 16)), inert) == tricky


def test_metrics_are_found_beside_the_store_or_reported_missing(tmp_path):
    bare = make_run(tmp_path, steps=1, rows=8, metrics=None)
    assert report.find_metrics(bare, bare / "rl" / "traces") is None
    html = report.write_report(bare / "rl" / "traces", tmp_path / "bare.html").read_text()
    assert 'id="no-metrics"' in html and "no metrics.jsonl found" in html
    (bare / "rl" / "metrics.jsonl").write_text(json.dumps(METRICS[1]) + "\n{torn")
    for given in (bare, bare / "rl" / "traces"):
        assert report.find_metrics(given, bare / "rl" / "traces") == bare / "rl" / "metrics.jsonl"
    assert report.read_metrics(bare / "rl" / "metrics.jsonl") == [METRICS[1]]


@pytest.mark.parametrize("mode", ["embed", "link", "copy"])
def test_image_modes(run, tmp_path, mode):
    out = report.write_report(run, tmp_path / "sub" / "report.html", images=mode)
    data = embedded(out.read_text(), "trace-data")
    column = data["cols"].index("image_path")
    sources = {row[column] for row in data["rows"]}
    if mode == "embed":
        assert all(src.startswith("data:image/png;base64,") for src in sources)
        return
    assert not any(src.startswith(("data:", "/", "file:")) for src in sources)
    assert all((out.parent / src).is_file() for src in sources), sources
    if mode == "copy":
        assert all(src.startswith("report_files/") for src in sources)


def test_unknown_image_mode_is_an_error(run, tmp_path):
    with pytest.raises(ValueError, match="images='base64'"):
        report.write_report(run, tmp_path / "r.html", images="base64")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


def test_serve_rebuilds_when_a_step_is_written(tmp_path):
    run = make_run(tmp_path, steps=1, rows=8)
    with pytest.raises(ValueError, match="loopback"):
        report.make_server(run, port=0, host="0.0.0.0")
    server = report.make_server(run, port=0)
    assert server.server_address[0] == "127.0.0.1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        status, page = _get(base)
        data = embedded(page.decode(), "trace-data")
        assert status == 200 and len(data["rows"]) == 8 and data["live_version"]
        src = data["rows"][0][data["cols"].index("image_path")]
        status, png = _get(base + src)
        assert status == 200 and png.startswith(b"\x89PNG")
        assert _get(base + "files/../metrics.jsonl")[0] == 404
        assert _get(base + "files/%2e%2e/metrics.jsonl")[0] == 404
        version = _get(base + "version")[1].decode()
        assert version == data["live_version"]
        time.sleep(0.01)  # a new mtime even on a coarse clock
        TraceWriter(run / "rl" / "traces").write_step(2, synthetic_rows(2, 8))
        assert _get(base + "version")[1].decode() != version
        assert len(embedded(_get(base)[1].decode(), "trace-data")["rows"]) == 16
    finally:
        server.shutdown()
        server.server_close()


def test_serve_before_the_run_has_traces(tmp_path):
    server = report.make_server(tmp_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status, _ = _get(f"http://127.0.0.1:{server.server_address[1]}/")
        assert status == 404
        assert _get(f"http://127.0.0.1:{server.server_address[1]}/files/x.png")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"the report's browser tests need {CHROMIUM} and {CHROMEDRIVER}: "
            "`apt-get install -y chromium chromium-driver` (as .ci/run does)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the report's browser tests need selenium: `pip install -e '.[test]'`")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def load(driver, url: str, timeout: float = 60.0) -> None:
    """Open `url` and wait for the first page of groups (`data-groups-ready`); no plot is drawn yet."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.documentElement.dataset.groupsReady") == "1"
    )


def plots_ready(driver, timeout: float = 60.0) -> None:
    """Wait until the page has drawn its plots (`data-plots-ready`), failing on `data-plots="failed"`."""
    from selenium.webdriver.support.ui import WebDriverWait

    state = "return [document.documentElement.dataset.plots, document.documentElement.dataset.plotsReady]"
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(state)[0] in ("drawn", "failed"))
    assert driver.execute_script(state) == ["drawn", "1"], driver.find_element("id", "plots-status").text


def open_curves(driver) -> list[str]:
    """Open the Curves section by a click and wait for its plots; returns every text the status line
    showed meanwhile."""
    from selenium.webdriver.common.by import By

    driver.execute_script("""
        window.__statuses = [];
        const line = document.getElementById('plots-status');
        new MutationObserver(() => { if (!line.hidden) window.__statuses.push(line.textContent); })
            .observe(line, {attributes: true, childList: true, characterData: true, subtree: true});""")
    driver.find_element(By.CSS_SELECTOR, "#curves > summary").click()
    plots_ready(driver)
    return driver.execute_script("return window.__statuses")


def severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def shown_groups(driver) -> list[tuple[str, str]]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#groups .group')).map(g => [g.dataset.step, g.dataset.group])"
    )


def test_report_in_chromium_filters_paginates_and_keeps_scripts_as_text(browser, run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out = report.write_report(run, tmp_path / "report.html")  # images embedded (a small run)
    load(browser, out.as_uri())
    assert severe(browser) == []
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    # Nothing of plotly ran with the page: the plots wait for the Curves section to be opened.
    assert browser.execute_script("return typeof window.Plotly") == "undefined"
    assert browser.execute_script("return document.documentElement.dataset.plots") == "idle"
    assert not browser.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")

    first = shown_groups(browser)
    assert len(first) == 10 and {step for step, _ in first} == {"3"}  # one page, newest step first, of 36 groups
    Select(browser.find_element(By.ID, "sort")).select_by_value("old")
    Select(browser.find_element(By.ID, "filter-step")).select_by_value("1")
    groups = shown_groups(browser)
    assert groups != first and {step for step, _ in groups} == {"1"}
    # The script-laden prompt is shown as its literal text; nothing of it became markup.
    xss_group = browser.find_element(By.CSS_SELECTOR, "#groups .group")
    assert xss_group.find_element(By.CSS_SELECTOR, ".prompt").text == XSS
    assert XSS in xss_group.find_element(By.CSS_SELECTOR, ".seg").text
    assert not [b for b in browser.find_elements(By.CSS_SELECTOR, "#groups b") if b.text == "x"]
    assert browser.execute_script("return typeof window.__pwned") == "undefined"

    Select(browser.find_element(By.ID, "filter-step")).select_by_value("")
    browser.find_element(By.ID, "show-aha").click()
    aha_groups = shown_groups(browser)
    assert aha_groups and aha_groups != groups
    for group in browser.find_elements(By.CSS_SELECTOR, "#groups .group"):
        assert group.find_elements(By.CSS_SELECTOR, ".card.aha")
    browser.find_element(By.CSS_SELECTOR, ".pager button[data-page='next']").click()
    assert shown_groups(browser) != aha_groups or len(aha_groups) < 10

    statuses = open_curves(browser)
    assert statuses and statuses[0].startswith("Loading plots…")  # shown while plotly.js is evaluated
    assert browser.find_element(By.ID, "plots-status").is_displayed() is False
    assert browser.execute_script("return typeof window.Plotly") == "object"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#curves .plot-grid .js-plotly-plot")) == 7
    assert len(browser.find_elements(By.CSS_SELECTOR, "#curves .plot-grid .js-plotly-plot .main-svg")) >= 7
    assert not browser.find_elements(By.CSS_SELECTOR, "details.plot-lazy .js-plotly-plot")
    browser.find_element(By.CSS_SELECTOR, "details.plot-lazy summary").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "details.plot-lazy .js-plotly-plot"))
    assert severe(browser) == []
    assert browser.execute_script("return typeof window.__pwned") == "undefined"

    Select(browser.find_element(By.ID, "filter-show")).select_by_value("")
    browser.execute_script("document.getElementById('plots').scrollIntoView()")
    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    if os.environ.get("COEVOLVE_SCREENSHOT_DIR"):
        target = Path(os.environ["COEVOLVE_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, target / "report.png")
        browser.execute_script("document.getElementById('browser').scrollIntoView()")
        browser.save_screenshot(str(target / "report-groups.png"))


def test_served_report_in_chromium(browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    run = make_run(tmp_path, steps=2, rows=16)
    server = report.make_server(run, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        load(browser, f"http://127.0.0.1:{server.server_address[1]}/#plots")  # a #plots URL opens the curves
        plots_ready(browser)
        browser.execute_script("document.getElementById('browser').scrollIntoView()")
        WebDriverWait(browser, 30).until(lambda d: d.execute_script(
            "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length") >= 8)  # fmt: skip
        assert severe(browser) == []  # images load from /files/, no favicon request fails
    finally:
        server.shutdown()
        server.server_close()
