"""Trace store speed on a synthetic 10,000-trajectory store: loading it, and each named query.

    python benchmarks/traces_bench.py [--rows 10000] [--steps 10] [--repeats 3]

Builds the store in a temporary directory (`coevolve.traces.synthetic.synthetic_store`: rows
shaped like a `coevolve rl recipe=shapes` run's), then times, each as the median of `--repeats`
runs in this process: opening the store and reading every row into pandas (`load`), and every
query `coevolve traces query` runs — each named query, a `--below` and a `--where` condition —
from an opened store (DuckDB over the shards), and the `coevolve traces query --named aha`
command end to end in a fresh process. Prints JSON: rows, steps, seconds per measurement.
One function per measurement; add a new one to MEASUREMENTS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from coevolve.traces.store import TraceStore, named_queries
from coevolve.traces.synthetic import synthetic_store

WHERE = {
    "below format=0.5": {"below": ["format=0.5"]},
    'where "reward/image_alignment" < 0.5 AND p_yes > 0.5': {"where": '"reward/image_alignment" < 0.5 AND p_yes > 0.5'},
}


def timed(function: Callable[[], object], repeats: int) -> float:
    """Median seconds of `repeats` calls."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return round(statistics.median(seconds), 4)


def build(root: Path, rows: int, steps: int) -> dict:
    start = time.perf_counter()
    synthetic_store(root, steps=steps, rows_per_step=rows // steps)
    return {"build_s": round(time.perf_counter() - start, 2)}


def load(root: Path, repeats: int) -> dict:
    def read():
        frame = TraceStore.open(root).frame()
        assert len(frame) > 0

    return {"load_s": timed(read, repeats)}


def queries(root: Path, repeats: int) -> dict:
    store = TraceStore.open(root)
    out = {}
    cases = {f"query {name}": {"named": [name]} for name in named_queries}
    cases.update({f"query {label}": arguments for label, arguments in WHERE.items()})
    for label, arguments in cases.items():
        out[label] = {"s": timed(lambda a=arguments: store.query(**a), repeats), "rows": len(store.query(**arguments))}
    return {"queries": out}


def cli(root: Path, repeats: int) -> dict:
    """`coevolve traces query ROOT --named aha` end to end in a fresh process (imports included)."""
    command = [sys.executable, "-m", "coevolve.cli.main", "traces", "query", str(root), "--named", "aha"]
    return {
        "cli query aha (fresh process)_s": timed(
            lambda: subprocess.run(command, check=True, capture_output=True), repeats
        )
    }


def report(root: Path, repeats: int) -> dict:
    """The HTML viewer (coevolve/traces/report.py) over the store: seconds to write it
    (`write_report`, images linked) and its size; then, in headless Chromium, per load:
    `groups_ready_s`, from `driver.get` to the page's `data-groups-ready` (the first page of groups
    rendered, on screen and answering: what the 2 s target measures; `groups_ready_page_s` is the
    same moment by the page's clock, from navigation start), then the Curves section is opened by a
    click and `plots_after_open_s` is the time from that click to `data-plots-ready` (plotly.js
    evaluated, `plotly_eval_s`, then the figures drawn, `plots_draw_s`). Once in a fresh browser
    (cold: nothing compiled or cached), then the median of `repeats` loads in the same browser
    (warm). The run's metrics.jsonl is synthesised beside the store. Needs /usr/bin/chromium,
    /usr/bin/chromedriver and selenium."""
    from coevolve.traces.report import write_report

    steps = TraceStore.open(root).steps()
    terms = ("image_alignment", "final_alignment", "self_consistency", "format")
    keys = [f"introspective/reward/{t}/mean" for t in terms] + ["reconstruction/reward/reconstruction/mean"]
    keys += ["learner/kl", "learner/entropy/text", "learner/entropy/image", "learner/clip_ratio/region_mean",
             "learner/loss", "learner/grad_norm", "timing/step_s"]  # fmt: skip
    evals = {"eval/image_accuracy": 0.1, "eval/verdict_accuracy_own/p_yes": 0.8}
    with open(root.parent / "metrics.jsonl", "w") as stream:
        for step in steps:
            stream.write(json.dumps({"step": step, **{key: 0.01 * step for key in keys}}) + "\n")
            if step % 5 == 0:
                stream.write(json.dumps({"step": step, **evals}) + "\n")
    out = root.parent / "report.html"
    result = {"report_write_s": timed(lambda: write_report(root, out, images="link"), repeats)}
    result["report_mib"] = round(out.stat().st_size / 2**20, 1)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        return {**result, "report_load": "not measured: selenium is not installed"}
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        return {**result, "report_load": "not measured: apt-get install chromium chromium-driver"}
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)

    def until(script: str) -> float:
        WebDriverWait(driver, 120, poll_frequency=0.005).until(lambda d: d.execute_script(script))
        return time.perf_counter()

    def mark(name: str) -> float:
        return driver.execute_script(f"return performance.getEntriesByName('{name}')[0].startTime") / 1000

    def load() -> dict:
        start = time.perf_counter()
        driver.get(out.as_uri())
        ready = until("return document.documentElement.dataset.groupsReady === '1'") - start
        measured = {
            "groups_ready_s": round(ready, 3),
            "groups_ready_page_s": round(mark("groups-ready"), 3),
            "groups_in_dom": driver.execute_script("return document.querySelectorAll('#groups .group').length"),
            "plotly_evaluated_at_load": driver.execute_script("return typeof window.Plotly !== 'undefined'"),
        }
        opened = time.perf_counter()
        driver.execute_script("document.querySelector('#curves > summary').click()")
        drawn = until("return ['drawn', 'failed'].includes(document.documentElement.dataset.plots)") - opened
        state = driver.execute_script("return document.documentElement.dataset.plots")
        if state != "drawn":
            raise RuntimeError(f"the report's plots {state}: {driver.find_element('id', 'plots-status').text}")
        return {
            **measured,
            "plots_after_open_s": round(drawn, 3),
            "plotly_eval_s": round(mark("plotly-evaluated") - mark("plots-requested"), 3),
            "plots_draw_s": round(mark("plots-drawn") - mark("plotly-evaluated"), 3),
            "plots_drawn": driver.execute_script("return document.querySelectorAll('#curves .js-plotly-plot').length"),
        }

    try:
        cold = load()
        warm = [load() for _ in range(max(1, repeats))]
    finally:
        driver.quit()
    numbers = ("groups_ready_s", "groups_ready_page_s", "plots_after_open_s", "plotly_eval_s", "plots_draw_s")
    warm_load = {**warm[0], **{key: statistics.median(w[key] for w in warm) for key in numbers}}
    return {
        **result,
        "report_load_fresh_browser": cold,
        f"report_load_again (median of {len(warm)})": warm_load,
        "report_2s_target": "groups_ready_s: driver.get to the first page of groups rendered and interactive; "
        "the plots are not part of the page load (drawn when the Curves section is opened: plots_after_open_s)",
    }


MEASUREMENTS = (load, queries, cli, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "traces"
        result = {"rows": args.rows, "steps": args.steps, **build(root, args.rows, args.steps)}
        for measure in MEASUREMENTS:
            result.update(measure(root, args.repeats))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
