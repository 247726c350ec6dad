"""The HTML viewer of a run's traces: one file, no network; `serve` for a live run.

`render_report(frame, metrics, image_root, out, title)` is the core: `frame` is `TraceStore.frame()`
(one row per trajectory), `metrics` the rows of the run's `metrics.jsonl`. The page holds
- the groups: per step, each group of trajectories as an image grid with plan, verdict, P(yes),
  reflection, regeneration (every text and image segment the rows have), each reward term's raw and
  normalised value and each segment's advantage (trained segments in bold). Filters (step,
  program, verdict, aha / regenerated / dropped, text search) and sort run in the browser;
  groups are paginated, so 10,000 rows never become 10,000 image grids at once;
- the aha cases (`aha_mask`: the store's named query "aha", coevolve/traces/queries.py): a No
  verdict whose regeneration scored higher than the first image; a filter and a count;
- plots (plotly.js): the metric keys sorted into panels by pattern (`PANELS`: reward terms,
  verifier-judged eval accuracy, verdict accuracy, clip fraction, KL, entropy); every other numeric
  key goes into "Other metrics" (drawn when opened, each line hidden until its legend entry is
  clicked), so a renamed key is never silently dropped. Plus regenerations and aha cases per step,
  counted from the traces. The plots cost nothing at page load: plotly.js (~5 MB) travels inside
  the page as inert text (`<script type="text/plain" id="plotly-src">`, escaped by `_inert`: no
  `<` left in it, so no byte of it can end the block) and is evaluated, and the figures drawn, only
  when the Curves section (a closed `<details>`) is opened: by a click, the "Curves" link or a
  `#plots` URL. The page stays one self-contained file that works from file:// with no network.
Readiness, on `<html>`: `data-groups-ready="1"` once the first page of groups is rendered and its
controls work (what "loads in under 2 s" measures: benchmarks/traces_bench.py); `data-plots` is
"idle" until the Curves section is opened, then "loading", then "drawn" (with
`data-plots-ready="1"`) or "failed" (the reason shown in the section).

Safety: the template (Jinja2, autoescaping on) renders no row data as HTML. Rows travel as JSON in
a `<script type="application/json">` block (`tojson`: `<`, `>`, `&` escaped, so a `</script>` in
a prompt cannot close it) and reach the DOM through `textContent` only.

Images (`images=`): "embed" (base64 data URIs: one truly self-contained file), "link" (relative
paths from the HTML to the store's PNGs: the report must stay where it was written), "copy" (the
PNGs copied beside the HTML into `<stem>_files/`, so the pair can be moved), "auto" (embed up to
`EMBED_LIMIT_BYTES` of images, else link).

`write_report(run, out)` opens the store (`TraceStore.open(run)`: a run dir or a store dir) and
finds the metrics with `find_metrics`: the first `metrics.jsonl` of `<store root>/..` (the stage
dir: `RUN/rl/traces` → `RUN/rl/metrics.jsonl`), `RUN/rl/`, `RUN/`. Without one, the plots section
says so. `serve(run)` serves the same page on 127.0.0.1, rebuilt when the run writes a shard or a
metrics row, with the images under `/files/`; the page offers a reload when the run moves on.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd

# (title, key pattern, hide keys that extend another key of the panel: per-category breakdowns)
PANELS: tuple[tuple[str, str, bool], ...] = (
    ("Reward terms (batch mean)", r"(?:^|/)reward/[^/]+/mean$", False),
    ("Verifier-judged accuracy (eval)", r"^eval/(?!verdict_accuracy)", True),
    ("Verdict accuracy (eval)", r"^eval/verdict_accuracy", True),
    ("Clip fraction", r"clip_(?:ratio|fraction)|frac_clipped", False),
    ("KL", r"(?:^|/)kl(?:$|/|_)", False),
    ("Entropy", r"(?:^|/)entropy(?:$|/)", False),
)
IMAGE_MODES = ("auto", "embed", "link", "copy")
EMBED_LIMIT_BYTES = 16 * 2**20
_AHA = "\x00aha"  # the marks' column while the frame is sorted
_LAYOUT = {
    "template": "plotly_white",
    "height": 360,
    "xaxis_title": "step",
    "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
}
_META = ("run", "step", "group", "id", "program", "prompt", "policy_version", "final_image", "p_yes", "rounds",
         "dropped", "trained_segments")  # fmt: skip


def aha_mask(store, frame: pd.DataFrame) -> tuple[pd.Series | None, str]:
    """((rows,) bool aligned with `frame`, what it marks): the rows of `store` matching its named query
    "aha" (coevolve/traces/queries.py: the one definition), or (None, why not) when the store's reward
    terms cannot define it."""
    from coevolve.traces.queries import named_queries

    try:
        hits = store.query_table(named=["aha"], steps=None).select(["step", "id"]).to_pylist()
    except ValueError as error:
        return None, str(error)
    keys = {(row["step"], row["id"]) for row in hits}
    marks = [(step, id_) in keys for step, id_ in zip(frame["step"].tolist(), frame["id"].tolist())]
    return pd.Series(marks, index=frame.index, dtype=bool), named_queries["aha"].description


def find_metrics(path: str | Path, store_root: str | Path) -> Path | None:
    """The run's `metrics.jsonl`: `<store_root>/../`, then `<path>/rl/`, then `<path>/`; None if absent."""
    path, store_root = Path(path), Path(store_root)
    for candidate in (store_root.parent, path / "rl", path):
        if (candidate / "metrics.jsonl").is_file():
            return candidate / "metrics.jsonl"
    return None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The JSON rows of a metrics file (a torn last line of a live run is skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def metric_figures(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One plotly figure (as a JSON-ready dict, with "title") per `PANELS` entry that has keys, then
    "Other metrics": every remaining numeric key, each line hidden until clicked in the legend."""
    import plotly.graph_objects as go
    import plotly.io as pio

    series: dict[str, list[tuple[float, float]]] = {}
    for row in metrics:
        step = row.get("step")
        if not _is_number(step):
            continue
        for key, value in row.items():
            if key != "step" and _is_number(value):
                series.setdefault(key, []).append((step, value))
    panels: list[tuple[str, list[str], bool]] = [(title, [], hide) for title, _, hide in PANELS]
    other: list[str] = []
    for key in sorted(series):
        index = next((i for i, (_, pattern, _) in enumerate(PANELS) if re.search(pattern, key)), None)
        (other if index is None else panels[index][1]).append(key)
    panels.append((f"Other metrics: {len(other)} keys, each shown when its legend entry is clicked", other, True))

    figures = []
    for title, keys, hide in panels:
        if not keys:
            continue
        figure = go.Figure(layout={"title": title, "hovermode": "x unified", **_LAYOUT})
        hidden = {key: keys is other or (hide and any(key.startswith(k + "/") for k in keys)) for key in keys}
        for key in sorted(keys, key=lambda k: hidden[k]):  # the shown lines first in the legend
            points = sorted(series[key])
            figure.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=key,
                               mode="lines+markers" if len(points) < 30 else "lines",
                               visible="legendonly" if hidden[key] else True)  # fmt: skip
        figures.append({"title": title, "lazy": title.startswith("Other"), **json.loads(pio.to_json(figure))})
    return figures


def aha_figure(frame: pd.DataFrame, aha: pd.Series) -> dict[str, Any] | None:
    """Bars per step: regenerations after a No, and the aha cases among them (from the traces)."""
    if frame.empty or "regen_image_path" not in frame:
        return None
    import plotly.graph_objects as go
    import plotly.io as pio

    steps = frame["step"]
    regenerated = frame["regen_image_path"].notna().groupby(steps).sum()
    ahas = aha.groupby(steps).sum()
    figure = go.Figure(layout={"title": "Aha cases per step (traces)", "barmode": "group", **_LAYOUT})
    figure.add_bar(x=regenerated.index.tolist(), y=regenerated.tolist(), name="regenerated")
    figure.add_bar(x=ahas.index.tolist(), y=ahas.tolist(), name="aha (regeneration scored higher)")
    return {"title": "Aha cases per step", "lazy": False, **json.loads(pio.to_json(figure))}


def render_report(
    frame: pd.DataFrame,
    metrics: list[dict[str, Any]],
    image_root: str | Path,
    out: str | Path,
    title: str,
    *,
    aha: pd.Series | None = None,
    aha_note: str = "not computed",
    images: str = "auto",
    info: dict[str, str] | None = None,
) -> Path:
    """Write the report of `frame` (`TraceStore.frame()` shape; image paths relative to
    `image_root`) and `metrics` (metrics.jsonl rows) to `out`; returns `out`. `aha`: (rows,) bool
    aligned with `frame` marking the aha cases (`aha_mask`), `aha_note` what they are (or why
    there are none). See the module doc."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_src = _image_source(images, Path(image_root), out, frame)
    html = build_html(frame, metrics, image_src, title, aha=aha, aha_note=aha_note, info=info)
    out.write_text(html, encoding="utf-8")
    return out


def build_html(
    frame: pd.DataFrame,
    metrics: list[dict[str, Any]],
    image_src: Callable[[str], str],
    title: str,
    *,
    aha: pd.Series | None = None,
    aha_note: str = "not computed",
    info: dict[str, str] | None = None,
    live_version: str | None = None,
) -> str:
    """The report page as a string; `image_src` maps a stored image path to the URL the page uses;
    with `live_version` the page polls `version` and offers a reload when it changes (`serve`)."""
    frame = frame.reindex(columns=list(dict.fromkeys(["step", "group", "id", *frame.columns])))  # an empty store
    marked = aha is not None
    frame = frame.assign(**{_AHA: aha.astype(bool) if marked else False})
    frame = frame.sort_values(["step", "group", "id"], kind="stable").reset_index(drop=True)
    aha = frame.pop(_AHA)
    figures = metric_figures(metrics)
    extra = aha_figure(frame, aha) if marked else None
    if extra is not None:
        figures.insert(len([f for f in figures if not f["lazy"]]), extra)
    for index, figure in enumerate(figures):
        figure["index"] = index
    data = _payload(frame, aha, image_src)
    data["live_version"] = live_version
    plotly_js = _plotly_inert() if figures else None  # no figure: no plotly.js in the page
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=title, data=data, figures=figures, plotly_js=plotly_js, info=info or {},
        steps=sorted({int(s) for s in frame["step"].dropna()}) if "step" in frame else [],
        programs=sorted({str(p) for p in frame["program"].dropna()}) if "program" in frame else [],
        counts={"rows": len(frame), "groups": len(data["groups"]), "aha": int(aha.sum()) if marked else None},
        aha_note=aha_note,
        has_metrics=bool(metrics), generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )  # fmt: skip


def write_report(run: str | Path, out: str | Path, *, images: str = "auto") -> Path:
    """Open the trace store of `run` (a run dir or a store dir), find its metrics (`find_metrics`)
    and write the report to `out`; returns `out`."""
    loaded = _load(run)
    return render_report(loaded.pop("frame"), loaded.pop("metrics"), loaded.pop("root"), out, images=images, **loaded)


def _load(run: str | Path) -> dict[str, Any]:
    """The arguments of `render_report` for the store of `run`, but `out`, `images`."""
    from coevolve.traces.store import TraceStore

    store = TraceStore.open(run)
    frame = store.frame()
    aha, aha_note = aha_mask(store, frame)
    metrics_path = find_metrics(run, store.root)
    metrics = read_metrics(metrics_path) if metrics_path else []
    name = str(frame["run"].iloc[0]) if "run" in frame and len(frame) else str(Path(run).absolute())
    info = {"run": name, "trace store": str(Path(store.root).absolute()),
            "metrics": str(metrics_path) if metrics_path else "no metrics.jsonl found (plots unavailable)"}  # fmt: skip
    title = f"coevolve traces — {Path(name).name or name}"
    return {"frame": frame, "metrics": metrics, "root": Path(store.root), "title": title, "aha": aha,
            "aha_note": aha_note, "info": info}  # fmt: skip


@functools.lru_cache(maxsize=1)
def _plotly_inert() -> str:
    """plotly.js (the installed plotly's bundle), `_inert`."""
    from plotly.offline import get_plotlyjs

    return _inert(get_plotlyjs())


_INERT = {"%": "%25", "<": "%3C", "\r": "%0D", "\x00": "%00"}


def _inert(code: str) -> str:
    """`code` as text for a `<script type="text/plain">` block that the page turns back into `code`
    (report.js, `loadPlotly`: %25, %3C, %0D, %00 → the character). With no `<` left, nothing in it
    can close the block or reach the parser's script-escape states; with no CR or NUL, the parser's
    newline and NUL rewriting cannot change it."""
    return re.sub("[%<\r\x00]", lambda match: _INERT[match.group()], code)


def _payload(frame: pd.DataFrame, aha: pd.Series, image_src: Callable[[str], str]) -> dict[str, Any]:
    """Rows as arrays under `cols` (sorted by step, group, id), groups as [step, group, first, end)."""
    columns = list(frame.columns)
    images = [c for c in columns if c.endswith("_path")]
    images.sort(key=lambda c: c != "image_path")  # the first image first, the rest in column order
    texts = [c for c in columns if c not in _META and "/" not in c and not c.endswith("_path")
             and frame[c].map(lambda v: v is None or isinstance(v, str) or _is_nan(v)).all()]  # fmt: skip
    terms = [c.split("/")[1] for c in columns if re.fullmatch(r"reward/[^/]+", c)]
    segments = [c.split("/", 1)[1] for c in columns if c.startswith("advantage/")]
    keep = [c for c in _META if c in frame] + texts + images + [c for c in columns if c.startswith(("reward/", "advantage/", "seconds/"))]  # fmt: skip
    table = frame[keep].copy()
    floats = table.select_dtypes("float").columns
    table[floats] = table[floats].round(4)
    table = table.astype(object).where(table.notna(), None)
    # Python lists from here: pandas would infer a str dtype again and turn None into NaN.
    values = {column: table[column].tolist() for column in keep}
    for column in images:
        values[column] = [None if p is None else image_src(str(p)) for p in values[column]]
    for column in [c for c in keep if c.endswith("/details")]:
        values[column] = [
            d if d is None or isinstance(d, str) else json.dumps(d, default=_plain) for d in values[column]
        ]
    values["aha"] = aha.tolist()
    verdicts = frame["verdict"].tolist() if "verdict" in frame else [None] * len(frame)
    values["verdict_class"] = [_verdict_class(v) for v in verdicts]
    keys = list(zip(frame["step"].tolist(), frame["group"].tolist()))
    starts = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]] + [len(keys)]
    groups = [[*keys[a], a, b] for a, b in itertools.pairwise(starts)]
    return {"cols": list(values), "rows": [list(row) for row in zip(*values.values())], "groups": groups,
            "texts": texts, "images": [[c.removesuffix("_path"), c] for c in images], "terms": terms,
            "segments": segments}  # fmt: skip


def _verdict_class(verdict: Any) -> str | None:
    """The verdict's class by its first word: "yes", "no", "other" (any other text), None (no verdict)."""
    if not isinstance(verdict, str) or not verdict.strip():
        return None
    text = verdict.lstrip()
    return "yes" if text.startswith("Yes") else "no" if text.startswith("No") else "other"


def _image_source(mode: str, root: Path, out: Path, frame: pd.DataFrame) -> Callable[[str], str]:
    if mode not in IMAGE_MODES:
        raise ValueError(f"images={mode!r}: expected one of {IMAGE_MODES}")
    paths = [str(p) for c in frame.columns if c.endswith("_path") for p in frame[c].dropna()]
    if mode == "auto":
        sizes = {p: (root / p).stat().st_size for p in set(paths) if (root / p).is_file()}
        size = sum(sizes.get(p, 0) for p in paths)  # every reference is embedded
        mode = "embed" if size <= EMBED_LIMIT_BYTES else "link"
    if mode == "embed":
        return functools.lru_cache(maxsize=None)(
            lambda p: "data:image/png;base64," + base64.b64encode((root / p).read_bytes()).decode("ascii")
        )
    if mode == "copy":
        target = out.parent / f"{out.stem}_files"
        for p in set(paths):
            if Path(p).is_absolute() or ".." in Path(p).parts:
                raise ValueError(f"image path {p!r} is not inside the trace store")
            (target / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / p, target / p)
        prefix = quote(target.name)
    else:
        prefix = quote(Path(os.path.relpath(root.absolute(), out.parent.absolute())).as_posix())
    return lambda p: f"{prefix}/{quote(p)}"


def _environment():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("coevolve.traces", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    # tojson escapes <, >, & and ' inside the JSON; NaN is not JSON: it must have become None already.
    environment.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "allow_nan": False, "default": _plain}
    return environment


def _plain(value: Any) -> Any:
    """A numpy scalar or array as its Python value (for json.dumps)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


# ---------------------------------------------------------------------------------------------- serve


def make_server(run: str | Path, port: int = 8765, host: str = "127.0.0.1"):
    """A `ThreadingHTTPServer` on `host:port` (loopback only) serving `/` (the report, rebuilt when
    the store's files or the metrics change), `/version` and `/files/<path>` (the store's images)."""
    import http.server
    import threading

    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"host={host!r}: the report server binds a loopback address only (use SSH port forwarding)")
    run = Path(run)
    cache: dict[str, Any] = {"version": None, "html": b"", "root": None}
    lock = threading.Lock()  # one rebuild at a time

    def current() -> tuple[bytes, Path | None]:
        with lock:
            return _current()

    def _current() -> tuple[bytes, Path | None]:
        version = _fingerprint(run)
        if version != cache["version"]:
            try:
                loaded = _load(run)
            except (FileNotFoundError, ValueError) as error:  # a live run that has not written a step yet
                return f"no trace store to show yet: {error}; reload when the run has written a step".encode(), None
            root = loaded.pop("root")
            html = build_html(loaded.pop("frame"), loaded.pop("metrics"), lambda p: "files/" + quote(p), **loaded,
                              live_version=version)  # fmt: skip
            cache.update(version=version, html=html.encode("utf-8"), root=root.resolve())
        return cache["html"], cache["root"]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                page, root = current()
                self._send(200 if root else 404, "text/html; charset=utf-8" if root else "text/plain", page)
            elif path == "/version":
                self._send(200, "text/plain", _fingerprint(run).encode())
            elif path.startswith("/files/"):
                root = cache["root"] or current()[1]
                target = (root / unquote(path[len("/files/") :])).resolve() if root else None
                if target is not None and target.is_relative_to(root) and target.is_file():
                    self._send(200, "image/png" if target.suffix == ".png" else "application/octet-stream",
                               target.read_bytes())  # fmt: skip
                else:
                    self._send(404, "text/plain", b"not found")
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return http.server.ThreadingHTTPServer((host, port), Handler)


def serve(run: str | Path, port: int = 8765, host: str = "127.0.0.1") -> None:
    """Serve the report of `run` on http://host:port/ until interrupted (see `make_server`)."""
    server = make_server(run, port, host)
    print(f"coevolve traces: serving {run} on http://{host}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _fingerprint(run: Path) -> str:
    """A digest of the name, size and mtime of every file of the run's traces and metrics, images
    excepted (they arrive with their rows): it changes when a live run writes a step."""
    digest = hashlib.sha1()
    beside = run.parent / "metrics.jsonl"  # a store dir's metrics (RUN/rl/traces → RUN/rl/metrics.jsonl)
    if beside.is_file():
        digest.update(f"{beside}:{beside.stat().st_size}:{beside.stat().st_mtime_ns}\n".encode())
    for directory, names, files in os.walk(run):
        names[:] = sorted(n for n in names if n not in ("images", "checkpoints") and not n.startswith("checkpoint"))
        for name in sorted(files):
            if name.endswith((".parquet", ".jsonl", ".json")):
                stat = os.stat(os.path.join(directory, name))
                digest.update(f"{directory}/{name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
