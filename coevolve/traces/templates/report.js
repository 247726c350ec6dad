// The trace viewer's client: filters, sort and pagination over the JSON rows, plots through plotly.
// Row data is written with textContent / property assignment only, never as HTML.
(function () {
  "use strict";
  performance.mark("script-start");
  const data = JSON.parse(document.getElementById("trace-data").textContent);
  const figures = JSON.parse(document.getElementById("figure-data").textContent);
  const rows = data.rows;
  const index = {};
  data.cols.forEach(function (name, i) { index[name] = i; });
  function get(row, name) { const i = index[name]; return i === undefined ? null : row[i]; }

  // groups: [step, group, first row, end row)
  const groups = data.groups.map(function (g) { return { step: g[0], name: g[1], first: g[2], end: g[3] }; });
  const matched = new Uint8Array(rows.length);
  let shown = [];  // groups with at least one matching row, in display order
  let haystacks = null;  // lower-cased searchable text per row, built on the first search

  const $ = function (id) { return document.getElementById(id); };
  const state = { page: 0 };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function fmt(x) {
    if (x === null || x === undefined) return "–";
    return typeof x === "number" && !Number.isInteger(x) ? x.toFixed(3) : String(x);
  }
  function signed(x) { return x === null ? "–" : (x > 0 ? "+" : "") + x.toFixed(2); }

  function search(i) {
    if (haystacks === null) {
      const names = ["id", "prompt", "program"].concat(data.texts);
      haystacks = rows.map(function (row) {
        return names.map(function (n) { const v = get(row, n); return v === null ? "" : String(v); }).join("\n").toLowerCase();
      });
    }
    return haystacks[i];
  }

  function rowMatches(i, f) {
    const row = rows[i];
    if (f.step !== "" && String(get(row, "step")) !== f.step) return false;
    if (f.program !== "" && get(row, "program") !== f.program) return false;
    if (f.verdict !== "") {
      const v = get(row, "verdict_class");
      if (f.verdict === "none" ? v !== null : v !== f.verdict) return false;
    }
    if (f.show === "aha" && !get(row, "aha")) return false;
    if (f.show === "regen" && get(row, "regen_image_path") === null) return false;
    if (f.show === "dropped" && get(row, "dropped") !== true) return false;
    if (f.show === "kept" && get(row, "dropped") === true) return false;
    if (f.text !== "" && search(i).indexOf(f.text) < 0) return false;
    return true;
  }

  function spread(g) {  // the widest range of any reward term inside the group
    let best = 0;
    data.terms.forEach(function (t) {
      let lo = Infinity, hi = -Infinity;
      for (let i = g.first; i < g.end; i++) {
        const v = get(rows[i], "reward/" + t);
        if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
      if (hi > lo) best = Math.max(best, hi - lo);
    });
    return best;
  }

  function applyFilters() {
    const f = {
      step: $("filter-step").value, program: $("filter-program").value, verdict: $("filter-verdict").value,
      show: $("filter-show").value, text: $("filter-text").value.trim().toLowerCase(),
    };
    let count = 0;
    shown = [];
    groups.forEach(function (g) {
      let any = false;
      for (let i = g.first; i < g.end; i++) {
        matched[i] = rowMatches(i, f) ? 1 : 0;
        if (matched[i]) { any = true; count++; }
      }
      if (any) shown.push(g);
    });
    const sort = $("sort").value;
    if (sort === "new") shown.reverse();
    if (sort === "spread") {
      shown.forEach(function (g) { if (g.spread === undefined) g.spread = spread(g); });
      shown.sort(function (a, b) { return b.spread - a.spread; });
    }
    $("match-count").textContent = count + " of " + rows.length + " trajectories match, in " + shown.length +
      " groups (non-matching members of a shown group are dimmed)";
    state.page = 0;
    render();
  }

  function pageSize() { return parseInt($("page-size").value, 10); }
  function pages() { return Math.max(1, Math.ceil(shown.length / pageSize())); }

  function render() {
    const box = $("groups");
    box.replaceChildren();
    const size = pageSize();
    const from = state.page * size;
    shown.slice(from, from + size).forEach(function (g) { box.appendChild(renderGroup(g)); });
    $("page-label").textContent = "page " + (state.page + 1) + " of " + pages() +
      " (groups " + (shown.length ? from + 1 : 0) + "–" + Math.min(from + size, shown.length) + " of " + shown.length + ")";
  }

  function renderGroup(g) {
    const box = el("article", "group");
    box.dataset.step = g.step;
    box.dataset.group = g.name;
    const first = rows[g.first];
    const head = el("div", "group-head");
    head.appendChild(el("span", "prompt", get(first, "prompt") || "(no prompt)"));
    head.appendChild(el("span", "meta", "step " + g.step + " · " + g.name + " · " + fmt(get(first, "program")) +
      " · policy v" + fmt(get(first, "policy_version")) + " · " + (g.end - g.first) + " trajectories"));
    box.appendChild(head);
    const means = data.terms.map(function (t) {
      let sum = 0, n = 0;
      for (let i = g.first; i < g.end; i++) { const v = get(rows[i], "reward/" + t); if (v !== null) { sum += v; n++; } }
      return n ? t + " " + (sum / n).toFixed(3) : null;
    }).filter(function (m) { return m !== null; });
    if (means.length) box.appendChild(el("div", "group-stats", "group mean: " + means.join(" · ")));
    const cards = el("div", "cards");
    for (let i = g.first; i < g.end; i++) cards.appendChild(renderCard(i, get(first, "prompt")));
    box.appendChild(cards);
    return box;
  }

  function renderCard(i, groupPrompt) {
    const row = rows[i];
    const card = el("div", "card" + (matched[i] ? "" : " dim") + (get(row, "aha") ? " aha" : ""));
    card.dataset.id = get(row, "id");
    const thumbs = el("div", "thumbs");
    data.images.forEach(function (pair) {
      const src = get(row, pair[1]);
      if (src === null) return;
      const fig = el("figure");
      const img = el("img", get(row, "final_image") === pair[0] ? "final" : "");
      img.loading = "lazy";
      img.alt = pair[0];
      img.src = src;
      fig.appendChild(img);
      fig.appendChild(el("figcaption", null, pair[0] + (get(row, "final_image") === pair[0] ? " (final)" : "")));
      thumbs.appendChild(fig);
    });
    card.appendChild(thumbs);

    const badges = el("div", "badges");
    const verdict = get(row, "verdict_class");
    if (verdict !== null) {
      badges.appendChild(el("span", "badge " + verdict, (verdict === "other" ? "off format" : verdict === "yes" ? "Yes" : "No") +
        (get(row, "p_yes") !== null ? " · P(yes) " + fmt(get(row, "p_yes")) : "")));
    }
    if (get(row, "aha")) badges.appendChild(el("span", "badge aha", "aha"));
    if (get(row, "dropped") === true) badges.appendChild(el("span", "badge dropped", "dropped"));
    if (get(row, "rounds") !== null) badges.appendChild(el("span", "badge", "rounds " + get(row, "rounds")));
    badges.appendChild(el("span", "badge", get(row, "id")));
    card.appendChild(badges);

    if (get(row, "prompt") !== groupPrompt) card.appendChild(segment("prompt", get(row, "prompt")));
    data.texts.forEach(function (name) { const t = get(row, name); if (t !== null) card.appendChild(segment(name, t)); });

    if (data.terms.length) {
      const table = el("table", "scores");
      const head = el("tr");
      ["term", "raw", "normalized"].forEach(function (h) { head.appendChild(el("th", null, h)); });
      table.appendChild(head);
      data.terms.forEach(function (t) {
        if (get(row, "reward/" + t) === null && get(row, "reward/" + t + "/normalized") === null) return;
        const tr = el("tr");
        tr.appendChild(el("td", null, t));
        tr.appendChild(el("td", null, fmt(get(row, "reward/" + t))));
        const norm = get(row, "reward/" + t + "/normalized");
        tr.appendChild(el("td", norm > 0 ? "pos" : norm < 0 ? "neg" : "", fmt(norm)));
        const details = get(row, "reward/" + t + "/details");
        if (details !== null) tr.title = details;
        table.appendChild(tr);
      });
      card.appendChild(table);
    }
    const trained = get(row, "trained_segments") || [];
    const adv = el("div", "adv");
    data.segments.forEach(function (s) {
      const a = get(row, "advantage/" + s);
      if (a === null) return;
      const isTrained = trained.indexOf(s) >= 0;
      const span = el("span", isTrained ? "trained" : "", "A(" + s + ") " + signed(a));
      span.title = isTrained ? "trained segment" : "not trained in this trajectory";
      adv.appendChild(span);
    });
    if (adv.childNodes.length) card.appendChild(adv);
    return card;
  }

  function segment(name, text) {
    const p = el("div", "seg");
    p.appendChild(el("b", null, name + ": "));
    p.appendChild(document.createTextNode(String(text).trim()));
    return p;
  }

  ["filter-step", "filter-program", "filter-verdict", "filter-show", "sort", "page-size"].forEach(function (id) {
    $(id).addEventListener("change", applyFilters);
  });
  let typing = null;
  $("filter-text").addEventListener("input", function () { clearTimeout(typing); typing = setTimeout(applyFilters, 200); });
  document.querySelectorAll(".pager button").forEach(function (button) {
    button.addEventListener("click", function () {
      const to = { first: 0, prev: state.page - 1, next: state.page + 1, last: pages() - 1 }[button.dataset.page];
      state.page = Math.min(Math.max(0, to), pages() - 1);
      render();
      if (button.closest("nav") !== document.querySelector(".pager")) $("browser").scrollIntoView();
    });
  });
  const ahaButton = $("show-aha");
  if (ahaButton) ahaButton.addEventListener("click", function () {
    $("filter-show").value = "aha";
    applyFilters();
    $("browser").scrollIntoView();
  });

  if (data.live_version) {  // served by `coevolve traces serve`: offer a reload when the run writes a step
    setInterval(function () {
      fetch("version", { cache: "no-store" }).then(function (r) { return r.text(); }).then(function (v) {
        if (v.trim() !== data.live_version) $("live-banner").hidden = false;
      }).catch(function () {});
    }, 10000);
  }

  performance.mark("data-parsed");
  applyFilters();
  performance.mark("groups-shown");  // in the DOM, every control wired

  // Plots: nothing of plotly runs with the page. Its bundle sits in <script type="text/plain"
  // id="plotly-src"> (escaped: report.py `_inert`), evaluated and the figures drawn only when the
  // Curves section is opened (a click on it or on the "Curves" link, or a #plots URL); about two
  // seconds of one core that the groups above do not wait for. <html> data-plots: "idle" →
  // "loading" → "drawn" (and data-plots-ready="1") or "failed"; "none" when there is nothing to plot.
  const root = document.documentElement;
  const curves = $("curves");
  root.dataset.plots = curves ? "idle" : "none";
  let plotly = null;  // the promise of window.Plotly, once asked for
  let drawing = null;  // the promise of every (not lazy) figure drawn, once asked for

  function parsed() {  // the plotly block comes after this script
    return document.readyState !== "loading" ? Promise.resolve() : new Promise(function (resolve) {
      document.addEventListener("DOMContentLoaded", resolve, { once: true });
    });
  }
  function painted() {  // after the next frame: a status set before it is on screen
    return new Promise(function (resolve) { requestAnimationFrame(function () { setTimeout(resolve, 0); }); });
  }
  function later() { return new Promise(function (resolve) { setTimeout(resolve, 0); }); }

  function loadPlotly() {
    if (plotly !== null) return plotly;
    plotly = parsed().then(painted).then(function () {
      if (window.Plotly) return window.Plotly;
      const source = $("plotly-src");
      if (!source) throw new Error("this page holds no plotly.js");
      const code = source.textContent.replace(/%(25|3C|0D|00)/g, function (_, hex) {
        return String.fromCharCode(parseInt(hex, 16));
      });
      // Run as an inline script: Chromium keeps its compiled code for the same text, so a second
      // load evaluates it in a fraction of the first's time (a blob: URL's script is compiled anew).
      const script = document.createElement("script");
      script.textContent = code;
      document.head.appendChild(script);  // runs now; an error in it goes to window.onerror
      if (!window.Plotly) throw new Error("plotly.js ran but defined no Plotly");
      return window.Plotly;
    }).then(function (Plotly) { performance.mark("plotly-evaluated"); return Plotly; });
    return plotly;
  }

  function draw(i) {
    const figure = figures[i];
    figure.drawn = true;
    return window.Plotly.newPlot("plot-" + i, figure.data, figure.layout, { responsive: true, displaylogo: false });
  }
  function status(text) {
    const line = $("plots-status");
    line.textContent = text;
    line.hidden = !text;
  }

  function drawPlots() {
    if (drawing !== null) return drawing;
    const eager = figures.filter(function (figure) { return !figure.lazy; }).length;
    performance.mark("plots-requested");
    root.dataset.plots = "loading";
    status("Loading plots… (evaluating plotly.js, then drawing " + eager + " figures)");
    drawing = loadPlotly().then(function () {
      return figures.reduce(function (chain, figure, i) {  // one figure per task: clicks are answered between them
        return figure.lazy ? chain : chain.then(function () { return draw(i); }).then(later);
      }, Promise.resolve());
    }).then(function () {
      performance.mark("plots-drawn");
      status("");
      root.dataset.plots = "drawn";
      root.dataset.plotsReady = "1";  // the tests and the benchmark wait for this
    }, function (error) {
      root.dataset.plots = "failed";
      status("The plots could not be drawn: " + error.message);
    });
    return drawing;
  }

  painted().then(function () {  // the first page of groups on screen and answering: what "loads in 2 s" means
    performance.mark("groups-ready");
    root.dataset.groupsReady = "1";
  });

  if (curves) {
    curves.addEventListener("toggle", function () { if (curves.open) drawPlots(); });
    document.querySelectorAll('a[href="#plots"]').forEach(function (link) {
      link.addEventListener("click", function () { curves.open = true; });
    });
    window.addEventListener("hashchange", function () { if (location.hash === "#plots") curves.open = true; });
    if (location.hash === "#plots") curves.open = true;
    figures.forEach(function (figure, i) {  // "Other metrics": drawn when its own <details> opens
      if (!figure.lazy) return;
      const box = $("plot-" + i).closest("details");
      box.addEventListener("toggle", function () {
        if (box.open && !figure.drawn) drawPlots().then(function () { if (window.Plotly && !figure.drawn) draw(i); });
      });
    });
  }
})();
