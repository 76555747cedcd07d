/* unitlens explorer: one front end for the live server (data from /api/...) and the static report (data from
   <script> files that call UNITLENS_PUT, because file:// pages cannot fetch). Plain DOM, no build step. */
(function () {
  "use strict";

  const STATIC = window.UNITLENS_STATIC || null;
  const MODE = STATIC ? "static" : "server";
  const PAGE_SIZE = 120;
  const store = {};
  const layerState = {};
  let renderToken = 0;
  let inlineThumbs = new Map(); // "atlas/id" -> data URI: the thumbnails a unit payload brought along

  window.UNITLENS_PUT = function (key, payload) { store[key] = payload; };

  // ---------------------------------------------------------------------------------------------- helpers
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || typeof c === "boolean") continue;
      el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return el;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v);
    }
    for (const c of children.flat(Infinity)) if (c) el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    return el;
  }
  function fmt(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e6) return v.toLocaleString("en-US");
    return v.toPrecision(digits || 3).replace(/\.?0+e/, "e");
  }
  const enc = encodeURIComponent;
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // ---------------------------------------------------------------------------------------------- data
  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const el = document.createElement("script");
      el.src = src;
      el.onload = resolve;
      el.onerror = () => reject(new ApiError(404, "cannot load " + src + " (is the report complete?)"));
      document.head.appendChild(el);
    });
  }

  async function api(parts) {
    const key = parts.join("/");
    if (MODE === "server") {
      const res = await fetch("/api/" + parts.map(enc).join("/"));
      const body = await res.json().catch(() => ({ error: res.statusText }));
      if (!res.ok) throw new ApiError(res.status, body.error || res.statusText);
      return body;
    }
    if (key === "catalog") return STATIC;
    if (!(key in store)) {
      const file = STATIC.files[key];
      if (!file) throw new ApiError(404, "this report has no page for " + key);
      await loadScript(file);
    }
    return store[key];
  }

  async function post(parts, body, isForm) {
    const res = await fetch("/api/" + parts.map(enc).join("/"), isForm ? { method: "POST", body: body } :
      { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const out = await res.json().catch(() => ({ error: res.statusText }));
    if (!res.ok) throw new ApiError(res.status, out.error || res.statusText);
    return out;
  }

  function thumbUrl(atlas, id) {
    const inline = inlineThumbs.get(atlas + "/" + id);
    if (inline) return inline;
    return MODE === "server" ? "/api/atlas/" + enc(atlas) + "/thumb/" + id : STATIC.thumbs[atlas].replace("{id}", id);
  }
  function fullUrl(atlas, id) {
    return MODE === "server" ? "/api/atlas/" + enc(atlas) + "/image/" + id : thumbUrl(atlas, id);
  }
  function featvizUrl(atlas, layer, folder, file) {
    const path = file.split("/").map(enc).join("/");
    return MODE === "server" ? "/api/atlas/" + enc(atlas) + "/featviz/" + enc(layer) + "/" + path
      : STATIC.featviz[atlas] + enc(folder) + "/" + path;
  }
  function figureUrl(kind, name, file) {
    const path = file.split("/").map(enc).join("/");
    return MODE === "server" ? "/api/" + kind + "/" + enc(name) + "/figure/" + path
      : STATIC.figures[kind + "/" + name] + path;
  }

  // ---------------------------------------------------------------------------------------------- routing
  function route() {
    const raw = MODE === "server" ? location.pathname : location.hash.replace(/^#/, "");
    return raw.split("/").filter(Boolean).map(decodeURIComponent);
  }
  function href(parts) {
    const path = parts.map(enc).join("/");
    return MODE === "server" ? "/" + path : "#/" + path;
  }
  function link(parts, ...children) { return h("a", { class: "nav", href: href(parts) }, ...children); }
  function go(parts) {
    if (MODE === "server") { history.pushState(null, "", href(parts)); render(); }
    else location.hash = href(parts);
  }
  document.addEventListener("click", (e) => {
    const a = e.target.closest("a.nav");
    if (!a || MODE !== "server" || e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    history.pushState(null, "", a.getAttribute("href"));
    render();
  });
  window.addEventListener("popstate", () => render());
  window.addEventListener("hashchange", () => { if (MODE === "static") render(); });

  function crumbs(items) {
    const nav = document.getElementById("crumbs");
    nav.replaceChildren();
    items.forEach(([label, parts], i) => {
      if (i) nav.appendChild(h("span", { class: "sep" }, "›"));
      nav.appendChild(parts ? link(parts, label) : h("span", {}, label));
    });
  }

  async function render() {
    const token = ++renderToken;
    const app = document.getElementById("app");
    const r = route();
    hideTooltip();
    let view;
    try {
      if (r.length === 0) view = await viewHome();
      else if (r[0] === "atlas" && r.length === 2) view = await viewOverview(r[1]);
      else if (r[0] === "atlas" && r.length === 3 && r[2] === "search") view = await viewSearch(r[1]);
      else if (r[0] === "atlas" && r.length === 4 && r[2] === "layer") view = await viewLayer(r[1], r[3]);
      else if (r[0] === "atlas" && r.length === 6 && r[2] === "layer" && r[4] === "unit")
        view = await viewUnit(r[1], r[3], r[5]);
      else if (r[0] === "study" && r.length === 2) view = await viewStudy(r[1]);
      else throw new ApiError(404, "there is no page at this address");
    } catch (err) {
      view = errorView(err);
    }
    if (token !== renderToken) return;
    app.replaceChildren(view);
    app.dataset.view = view.dataset.view || "";
    window.scrollTo(0, 0);
  }

  function errorView(err) {
    const status = err.status || 500;
    document.title = (status === 404 ? "Not found" : "Error") + " · unitlens";
    crumbs([["home", []]]);
    return h("section", { class: "error-page", "data-view": status === 404 ? "notfound" : "error" },
      h("h1", {}, status === 404 ? "Not found" : status === 409 ? "Not computed yet" : "Error"),
      h("p", { class: "message" }, err.message || String(err)),
      h("p", {}, link([], "back to the start")));
  }

  // ---------------------------------------------------------------------------------------------- pieces
  function notes(list) {
    if (!list || !list.length) return null;
    return h("div", { class: "notes" }, list.map((n) => h("p", { class: "note" }, n)));
  }

  function thumb(atlas, id, caption, opts) {
    opts = opts || {};
    const img = h("img", { class: "thumb", src: thumbUrl(atlas, id), alt: "sample " + id, loading: opts.eager ? null : "lazy",
      "data-sample": id, width: opts.size || null });
    const fig = h("figure", { class: "exemplar" + (opts.cls ? " " + opts.cls : "") }, img,
      caption !== undefined && caption !== null ? h("figcaption", {}, caption) : null);
    fig.addEventListener("click", () => openLightbox(atlas, id, caption));
    return fig;
  }

  function cropThumb(atlas, ex, caption) {
    if (!ex.box || !ex.size) return thumb(atlas, ex.id, caption);
    const S = 96;
    const [x0, y0, x1, y1] = ex.box;
    const [W, H] = ex.size;
    const k = S / Math.max(x1 - x0, y1 - y0);
    const img = h("img", { class: "thumb cropped", src: thumbUrl(atlas, ex.id), alt: "sample " + ex.id + " (crop)",
      loading: "lazy", "data-sample": ex.id });
    img.style.width = (W * k) + "px";
    img.style.height = (H * k) + "px";
    img.style.left = (-x0 * k + (S - (x1 - x0) * k) / 2) + "px";
    img.style.top = (-y0 * k + (S - (y1 - y0) * k) / 2) + "px";
    const fig = h("figure", { class: "exemplar" }, h("div", { class: "crop", title: "crop " + ex.box.join(", ") }, img),
      h("figcaption", {}, caption));
    fig.addEventListener("click", () => openLightbox(atlas, ex.id, caption));
    return fig;
  }

  function openLightbox(atlas, id, caption) {
    const box = document.getElementById("lightbox");
    box.querySelector("img").src = fullUrl(atlas, id);
    box.querySelector("figcaption").textContent = "sample " + id + (caption !== undefined && caption !== null ?
      " · " + caption : "") + (MODE === "static" ? " (thumbnail; the full image needs unitlens serve)" : "");
    box.hidden = false;
  }
  document.getElementById("lightbox").addEventListener("click", (e) => { e.currentTarget.hidden = true; });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") document.getElementById("lightbox").hidden = true; });

  function unitCard(c, extra) {
    const label = c.label && c.label !== "none" ? c.label : null;
    return h("a", { class: "nav card", href: href(["atlas", c.atlas, "layer", c.layer, "unit", String(c.unit)]),
      "data-unit": c.unit, "data-layer": c.layer },
      h("img", { class: "thumb", src: c.img || thumbUrl(c.atlas, c.top_id), alt: c.img ? "feature visualisation" :
        "top exemplar", loading: "lazy" }),
      h("div", { class: "card-title" }, "#" + c.unit),
      h("div", { class: "card-sub" }, extra || (c.mis !== null && c.mis !== undefined ? "MIS " + fmt(c.mis) : "")),
      label ? h("div", { class: "card-label" }, label) : null,
      c.showLayer ? h("div", { class: "card-layer" }, c.layer) : null);
  }

  function tiles(items) {
    return h("div", { class: "tiles" }, items.filter(Boolean).map(([label, value, sub]) =>
      h("div", { class: "tile" }, h("div", { class: "tile-value" }, fmt(value)), h("div", { class: "tile-label" }, label),
        sub ? h("div", { class: "tile-sub" }, sub) : null)));
  }

  function table(columns, rows, opts) {
    opts = opts || {};
    let sortKey = opts.sort || null;
    let asc = opts.asc !== undefined ? opts.asc : true;
    const tbody = h("tbody");
    const head = h("tr");
    const el = h("table", { class: "data" + (opts.cls ? " " + opts.cls : "") }, h("thead", {}, head), tbody);
    function fill() {
      const sorted = rows.slice();
      if (sortKey) {
        sorted.sort((a, b) => {
          const x = a[sortKey], y = b[sortKey];
          if (x === y) return 0;
          if (x === null || x === undefined) return 1;
          if (y === null || y === undefined) return -1;
          return (x < y ? -1 : 1) * (asc ? 1 : -1);
        });
      }
      tbody.replaceChildren(...sorted.map((r) => h("tr", {}, columns.map((c) =>
        h("td", { class: c.num ? "num" : null }, c.render ? c.render(r) : fmt(r[c.key], c.digits))))));
    }
    columns.forEach((c) => {
      head.appendChild(h("th", { class: c.num ? "num" : null, title: c.title || null, onclick: () => {
        asc = sortKey === c.key ? !asc : !c.num;
        sortKey = c.key;
        fill();
      } }, c.label));
    });
    fill();
    return el;
  }

  function figures(kind, name, list) {
    if (!list || !list.length) return null;
    return h("section", {}, h("h2", {}, "Figures"), h("div", { class: "figures" }, list.map((f) =>
      h("a", { href: figureUrl(kind, name, f), target: "_blank", class: "figure" },
        h("img", { src: figureUrl(kind, name, f), alt: f, loading: "lazy" }), h("span", {}, f)))));
  }

  // ---------------------------------------------------------------------------------------------- home
  async function viewHome() {
    const cat = await api(["catalog"]);
    document.title = "unitlens explorer";
    crumbs([["home", null]]);
    return h("section", { "data-view": "home" },
      h("h1", {}, "Atlases"),
      h("div", { class: "atlas-list" }, cat.atlases.map((a) => link(["atlas", a.name],
        h("div", { class: "atlas-card" }, h("strong", {}, a.name), h("span", {}, a.model || ""),
          h("span", {}, (a.units ? fmt(a.units) + " units · " : "") + a.layers + " layers · " + (a.data || "")),
          a.study ? h("span", { class: "muted" }, "study " + a.study) : null,
          a.status !== "complete" ? h("span", { class: "warn" }, "record " + a.status) : null)))),
      cat.studies.length ? h("h1", {}, "Studies") : null,
      cat.studies.length ? h("div", { class: "atlas-list" }, cat.studies.map((st) => link(["study", st.name],
        h("div", { class: "atlas-card" }, h("strong", {}, st.title), h("span", {}, st.atlases + " atlases"))))) : null,
      MODE === "static" ? h("p", { class: "muted" }, "Static report written " + STATIC.written +
        ". Text search and image probes need the live server: unitlens serve ATLAS.") : null);
  }

  // ---------------------------------------------------------------------------------------------- overview
  async function viewOverview(name) {
    const o = await api(["atlas", name]);
    document.title = name + " · unitlens";
    crumbs([["home", []], [name, null]]);
    const c = o.counts || {};
    const prov = [["model", o.model], ["weights", o.weights + (o.weights_hash ? " (" + o.weights_hash + ")" : "")],
      ["data", o.data + " · " + fmt(o.n_samples) + " samples" + (o.n_skipped ? ", " + o.n_skipped + " skipped" : "")],
      ["dataset fingerprint", o.fingerprint], ["exemplars per unit (k)", o.k],
      ["reduction", "spatial " + o.spatial + ", tokens " + o.tokens],
      ["recorded in", o.seconds !== null ? fmt(o.seconds) + " s" : "–"],
      ["versions", Object.entries(o.versions || {}).map(([k, v]) => k + " " + v).join(", ")],
      ["folder", o.path]];
    if (o.mis) prov.push(["MIS backend", o.mis.backend + (o.mis.tau ? " (τ " + o.mis.tau + ")" : "")]);
    if (o.lens) prov.push(["lens backend", o.lens.backend + " · crop " + o.lens.crop.join(", ") +
      (o.lens.concepts ? " · labels from " + o.lens.concepts : "")]);
    if (o.label_sets && o.label_sets.length) prov.push(["label sets", o.label_sets.map((t) => t.name +
      " (" + t.labelled + " of " + t.units + " units labelled)").join("; ") + (o.label_set ? " · shown: " + o.label_set : "")]);
    if (o.study) prov.push(["study", o.study]);
    const layers = o.layers || [];
    const cols = [
      { key: "depth", label: "#", num: true },
      { key: "layer", label: "layer", render: (r) => link(["atlas", name, "layer", r.layer], r.layer) },
      { key: "type", label: "type" }, { key: "units", label: "units", num: true },
      { key: "constant", label: "const.", num: true, title: "constant units (max − min < 1e-8)" },
      { key: "mis_mean", label: "MIS", num: true, title: "mean MIS of the scored units" },
      { key: "mis_p5", label: "p5", num: true }, { key: "mis_p95", label: "p95", num: true },
      { key: "accuracy", label: "acc.", num: true, title: "mean MIS accuracy" },
      { key: "clarity", label: "clarity", num: true }, { key: "polysemanticity", label: "polysem.", num: true },
      { key: "redundancy", label: "redund.", num: true },
      { key: "labels", label: "labels", render: (r) => r.labels || (r.embedded ? "" : "") },
    ];
    return h("section", { "data-view": "overview" },
      h("div", { class: "title-row" }, h("h1", {}, name), h("span", { class: "muted" }, o.model || ""),
        o.lens ? link(["atlas", name, "search"], h("span", { class: "button" }, "Search the lens")) : null),
      notes(o.notes),
      tiles([["layers", c.layers], ["units", c.units], ["constant", c.constant],
        c.scored !== undefined ? ["scored (MIS)", c.scored] : null, ["embedded (lens)", c.embedded],
        ["labelled", c.labelled],
        o.mis ? ["MIS mean", o.mis.mean, "p5–p95 " + fmt(o.mis.p5) + "–" + fmt(o.mis.p95)] : null,
        o.mis ? ["MIS accuracy", o.mis.accuracy] : null]),
      h("details", { class: "provenance" }, h("summary", {}, "Provenance"),
        h("dl", {}, prov.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === undefined || v === null ? "–" : String(v))]))),
      layers.some((l) => l.mis_mean !== undefined && l.mis_mean !== null) ? h("section", {},
        h("h2", {}, "MIS by layer"), misChart(name, layers)) : null,
      o.relevance && o.relevance.length ? h("p", {}, "Relevance computed for: " +
        o.relevance.map((r) => r.class_name + " (" + r.n_samples + " samples)").join(", ")) : null,
      o.audits && o.audits.length ? h("p", {}, "Audits: " + o.audits.map((a) => a.class_name + " — " +
        Object.entries(a.verdicts).map(([k, v]) => v + " " + k).join(", ")).join("; ")) : null,
      figures("atlas", name, o.figures),
      h("h2", {}, "Layers"),
      table(cols, layers, { sort: "depth", cls: "layers" }));
  }

  function misChart(name, layers) {
    const pts = layers.filter((l) => l.mis_mean !== undefined && l.mis_mean !== null);
    const W = 960, H = 240, L = 44, R = 10, T = 10, B = 30;
    const lo = Math.min(...pts.map((p) => p.mis_p5)), hi = Math.max(...pts.map((p) => p.mis_p95));
    const span = hi - lo || 1;
    const x = (i) => L + (pts.length > 1 ? i / (pts.length - 1) : 0.5) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / span) * (H - T - B);
    const band = pts.map((p, i) => x(i) + "," + y(p.mis_p95)).concat(
      pts.map((p, i) => x(i) + "," + y(p.mis_p5)).reverse()).join(" ");
    const ticks = [lo, lo + span / 2, hi];
    return s("svg", { class: "chart mis-chart", viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "MIS by layer" },
      ticks.map((t) => s("g", {}, s("line", { x1: L, x2: W - R, y1: y(t), y2: y(t), class: "grid" }),
        s("text", { x: L - 4, y: y(t) + 4, class: "tick", "text-anchor": "end" }, t.toFixed(3)))),
      s("polygon", { points: band, class: "band" }),
      s("polyline", { points: pts.map((p, i) => x(i) + "," + y(p.mis_mean)).join(" "), class: "line" }),
      pts.map((p, i) => s("circle", { cx: x(i), cy: y(p.mis_mean), r: 3.5, class: "point",
        onclick: () => go(["atlas", name, "layer", p.layer]) },
        s("title", {}, p.layer + " (" + p.type + "): MIS " + fmt(p.mis_mean) + ", p5–p95 " + fmt(p.mis_p5) + "–" +
          fmt(p.mis_p95)))),
      s("text", { x: L, y: H - 8, class: "tick" }, "first layer"),
      s("text", { x: W - R, y: H - 8, class: "tick", "text-anchor": "end" }, "last layer · band: p5–p95, line: mean"));
  }

  // ---------------------------------------------------------------------------------------------- layer
  const SORTS = {
    unit: ["unit", true, "unit"], mis: ["mis", false, "MIS (high first)"], mis_low: ["mis", true, "MIS (low first)"],
    mis_accuracy: ["mis_accuracy", false, "MIS accuracy"], clarity: ["clarity", false, "clarity"],
    polysemanticity: ["polysemanticity", false, "polysemanticity"], label_score: ["label_score", false, "label score"],
    top_val: ["top_val", false, "top activation"], mis_featviz: ["mis_featviz", false, "MIS of visualisations"],
  };

  async function viewLayer(name, layer) {
    const d = await api(["atlas", name, "layer", layer]);
    document.title = layer + " · " + name;
    crumbs([["home", []], [name, ["atlas", name]], [layer, null]]);
    const key = name + "/" + layer;
    const st = layerState[key] || (layerState[key] = { sort: "unit", label: "", minMis: "", hideConstant: false,
      verdict: "", page: 0, thumbs: "exemplar" });
    const cols = d.columns;
    const n = d.n_units;
    const sorts = Object.entries(SORTS).filter(([, v]) => v[0] === "unit" || d.sortable.includes(v[0]));
    d.relevance.forEach((r) => sorts.push(["rel:" + r.key, [r.key, false, "relevance for " + r.class_name]]));
    const labels = cols.label ? Array.from(new Set(cols.label.filter((v) => v && v !== "none"))).sort() : [];
    const grid = h("div", { class: "grid", id: "unit-grid" });
    const info = h("span", { class: "muted", id: "grid-info" });
    const pager = h("div", { class: "pager" });

    function metricOf() {
      return SORTS[st.sort] ? SORTS[st.sort][0] : st.sort.startsWith("rel:") ? st.sort.slice(4) : "unit";
    }
    function selected() {
      let idx = [...Array(n).keys()];
      if (st.hideConstant) idx = idx.filter((i) => !cols.constant[i]);
      if (st.label) idx = idx.filter((i) => cols.label && (cols.label[i] || "").toLowerCase().includes(st.label.toLowerCase()));
      if (st.minMis !== "" && cols.mis) idx = idx.filter((i) => cols.mis[i] !== null && cols.mis[i] >= Number(st.minMis));
      if (st.verdict) { const [k, v] = st.verdict.split("="); idx = idx.filter((i) => cols[k] && cols[k][i] === v); }
      const spec = SORTS[st.sort] || (st.sort.startsWith("rel:") ? [st.sort.slice(4), false] : ["unit", true]);
      const col = cols[spec[0]], asc = spec[1];
      if (spec[0] !== "unit" && col) {
        idx.sort((a, b) => {
          const x = col[a], y = col[b];
          if (x === y) return a - b;
          if (x === null) return 1;
          if (y === null) return -1;
          return asc ? x - y : y - x;
        });
      }
      return idx;
    }
    function draw() {
      const idx = selected();
      const pages = Math.max(1, Math.ceil(idx.length / PAGE_SIZE));
      st.page = Math.min(st.page, pages - 1);
      const first = st.page * PAGE_SIZE;
      const shown = idx.slice(first, first + PAGE_SIZE);
      const col = metricOf();
      grid.replaceChildren(...shown.map((i) => {
        const metric = col !== "unit" && cols[col] ? (SORTS[st.sort] ? SORTS[st.sort][2].split(" (")[0] :
          "relevance") + " " + fmt(cols[col][i]) : (cols.mis ? "MIS " + fmt(cols.mis[i]) : "top " + fmt(cols.top_val[i]));
        const vis = st.thumbs === "featviz" && d.featviz && cols.featviz_top[i] ?
          featvizUrl(name, layer, d.featviz.folder, cols.featviz_top[i]) : null;
        return unitCard({ atlas: name, layer: layer, unit: i, top_id: cols.top_id[i], label: cols.label ? cols.label[i] : null,
          mis: cols.mis ? cols.mis[i] : null, img: vis }, (cols.constant[i] ? "constant · " : "") + metric);
      }));
      info.textContent = idx.length ? "units " + (first + 1) + "–" + (first + shown.length) + " of " + idx.length +
        (idx.length < n ? " (filtered from " + n + ")" : "") : "no unit matches";
      pager.replaceChildren(
        h("button", { onclick: () => { st.page = Math.max(0, st.page - 1); draw(); }, disabled: st.page === 0 }, "‹ prev"),
        h("span", {}, " page " + (st.page + 1) + " of " + pages + " "),
        h("button", { id: "next-page", onclick: () => { st.page += 1; draw(); }, disabled: st.page >= pages - 1 }, "next ›"));
      if (mapState.redraw) mapState.redraw(new Set(idx));
    }
    const sortSelect = h("select", { id: "sort", onchange: (e) => { st.sort = e.target.value; st.page = 0; draw(); } },
      sorts.map(([k, v]) => h("option", { value: k, selected: k === st.sort }, v[2])));
    const labelInput = h("input", { id: "label-filter", type: "search", placeholder: "label contains…", value: st.label,
      list: "labels-" + key, oninput: (e) => { st.label = e.target.value; st.page = 0; draw(); } });
    const controls = h("div", { class: "controls" },
      h("label", {}, "sort ", sortSelect),
      cols.label ? h("label", {}, "label ", labelInput,
        h("datalist", { id: "labels-" + key }, labels.map((l) => h("option", { value: l })))) : null,
      cols.mis ? h("label", {}, "MIS ≥ ", h("input", { id: "min-mis", type: "number", step: "0.01", value: st.minMis,
        oninput: (e) => { st.minMis = e.target.value; st.page = 0; draw(); } })) : null,
      d.audits.length ? h("label", {}, "verdict ", h("select", { onchange: (e) => { st.verdict = e.target.value;
        st.page = 0; draw(); } }, h("option", { value: "" }, "any"), d.audits.map((a) =>
        ["valid", "spurious", "both", "unexpected"].map((v) => h("option", { value: a.key + "=" + v,
          selected: st.verdict === a.key + "=" + v }, a.class_name + ": " + v))))) : null,
      d.featviz ? h("label", {}, "thumbnails ", h("select", { id: "thumb-kind", onchange: (e) => { st.thumbs = e.target.value;
        draw(); } }, h("option", { value: "exemplar", selected: st.thumbs === "exemplar" }, "top exemplar"),
        h("option", { value: "featviz", selected: st.thumbs === "featviz" }, "feature visualisation"))) : null,
      h("label", {}, h("input", { type: "checkbox", checked: st.hideConstant,
        onchange: (e) => { st.hideConstant = e.target.checked; st.page = 0; draw(); } }), " hide constant units"));
    const mapState = {};
    const mapBox = d.embedded ? h("div", { class: "map-box", id: "theta-map" },
      h("p", { class: "muted" }, "Computing the θ map (first time for this layer only)…")) : null;
    const view = h("section", { "data-view": "layer" },
      h("div", { class: "title-row" }, h("h1", {}, layer), link(["atlas", name], name),
        d.embedded && !STATIC ? link(["atlas", name, "search"], h("span", { class: "button" }, "Search")) : null),
      h("p", { class: "muted" }, d.type + " · depth " + d.depth + " · " + fmt(n) + " units · " + d.n_constant +
        " constant" + (d.mis_backend ? " · MIS " + d.mis_backend : "") + (d.embedded ? " · lens " + d.lens_backend : "")),
      notes(d.notes),
      h("div", { class: d.embedded ? "layer-body with-map" : "layer-body" },
        h("div", { class: "layer-main" }, controls, h("div", { class: "grid-head" }, info, pager), grid),
        mapBox ? h("aside", {}, h("h2", {}, "θ map"), mapBox) : null));
    draw();
    if (mapBox) {
      api(["atlas", name, "layer", layer, "map"]).then((m) => drawMap(mapBox, m, d, name, layer, mapState, selected))
        .catch((err) => mapBox.replaceChildren(h("p", { class: "note" }, err.message)));
    }
    return view;
  }

  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1"];

  function drawMap(box, m, d, name, layer, mapState, selected) {
    const cols = d.columns;
    const S = 420, P = 12;
    const xs = m.x, ys = m.y;
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    const X = (v) => P + (v - x0) / ((x1 - x0) || 1) * (S - 2 * P);
    const Y = (v) => S - P - (v - y0) / ((y1 - y0) || 1) * (S - 2 * P);
    const counts = {};
    if (cols.label) m.units.forEach((u) => { const l = cols.label[u]; if (l && l !== "none") counts[l] = (counts[l] || 0) + 1; });
    const order = Object.keys(counts).sort((a, b) => counts[b] - counts[a]);
    const colour = (u) => {
      const l = cols.label ? cols.label[u] : null;
      const i = order.indexOf(l);
      return i >= 0 && i < PALETTE.length ? PALETTE[i] : (l && l !== "none" ? "#555" : "#bbb");
    };
    const dots = m.units.map((u, k) => s("circle", { cx: X(xs[k]).toFixed(1), cy: Y(ys[k]).toFixed(1), r: 4, fill: colour(u),
      class: "dot", "data-unit": u,
      onmouseenter: (e) => showTooltip(e, name, layer, u, cols),
      onmouseleave: hideTooltip,
      onclick: () => go(["atlas", name, "layer", layer, "unit", String(u)]) }));
    const svg = s("svg", { class: "chart map", viewBox: "0 0 " + S + " " + S, role: "img", "aria-label": m.method + " of θ" }, dots);
    const legend = h("div", { class: "legend" }, order.slice(0, PALETTE.length).map((l, i) =>
      h("span", {}, h("i", { style: "background:" + PALETTE[i] }), l + " (" + counts[l] + ")")),
      cols.label ? h("span", {}, h("i", { style: "background:#bbb" }), "none") : h("span", { class: "muted" },
        "no labels: run unitlens lens label"));
    box.replaceChildren(svg, h("p", { class: "muted" }, m.method + " of the θ of " + m.units.length +
      " non-constant units (" + m.backend + "); hover shows a unit, click opens it. Faded: filtered out."), legend);
    mapState.redraw = (keep) => dots.forEach((dot, k) => dot.classList.toggle("faded", !keep.has(m.units[k])));
    mapState.redraw(new Set(selected()));
  }

  function showTooltip(e, name, layer, u, cols) {
    const tip = document.getElementById("tooltip");
    tip.replaceChildren(h("img", { src: thumbUrl(name, cols.top_id[u]), alt: "" }),
      h("div", {}, h("strong", {}, "#" + u), cols.label && cols.label[u] ? " " + cols.label[u] : ""),
      cols.mis ? h("div", {}, "MIS " + fmt(cols.mis[u])) : null);
    tip.style.left = (e.pageX + 14) + "px";
    tip.style.top = (e.pageY + 14) + "px";
    tip.hidden = false;
  }
  function hideTooltip() { const tip = document.getElementById("tooltip"); if (tip) tip.hidden = true; }

  // ---------------------------------------------------------------------------------------------- unit
  async function unitPayload(name, layer, unitText) {
    if (!/^\d+$/.test(unitText)) throw new ApiError(404, "'" + unitText + "' is not a unit index");
    if (MODE === "server") {
      const p = await api(["atlas", name, "layer", layer, "unit", unitText]);
      inlineThumbs = new Map(Object.entries(p.thumbs || {}).map(([id, uri]) => [name + "/" + id, uri]));
      return p;
    }
    const pages = await api(["atlas", name, "layer", layer, "units"]);
    const u = Number(unitText);
    if (u >= pages.length) throw new ApiError(404, "unit " + u + " is not in layer " + layer + " of atlas " + name +
      ": it has units 0.." + (pages.length - 1));
    return pages[u];
  }

  async function viewUnit(name, layer, unitText) {
    const p = await unitPayload(name, layer, unitText);
    const u = p.unit;
    document.title = layer + " #" + u + " · " + name;
    crumbs([["home", []], [name, ["atlas", name]], [layer, ["atlas", name, "layer", layer]], ["#" + u, null]]);
    const st = p.stats;
    const nav = h("div", { class: "unit-nav" },
      u > 0 ? link(["atlas", name, "layer", layer, "unit", String(u - 1)], "‹ #" + (u - 1)) : null,
      u < p.n_units - 1 ? link(["atlas", name, "layer", layer, "unit", String(u + 1)], "#" + (u + 1) + " ›") : null);
    const lens = p.lens;
    return h("section", { "data-view": "unit" },
      h("div", { class: "title-row" }, h("h1", {}, layer + " #" + u), nav),
      h("p", { class: "muted" }, p.type + " · depth " + p.depth + " · unit " + u + " of " + p.n_units + " · atlas " + name),
      notes(p.notes),
      tiles([p.mis ? ["MIS", p.mis.value, p.mis.rank ? "rank " + p.mis.rank + " of " + p.mis.n_scored + " in the layer" :
        "not scored (" + (st.constant ? "constant" : "excluded") + ")"] : null,
        p.mis ? ["MIS accuracy", p.mis.accuracy] : null,
        p.featviz && p.featviz.mis !== null ? ["MIS (visualisations)", p.featviz.mis, "natural exemplars " +
          fmt(p.featviz.mis_exemplars)] : null,
        lens && lens.label !== undefined ? ["lens label", lens.label || "–", lens.a !== null && lens.a !== undefined ?
          "a = " + fmt(lens.a) : null] : null,
        lens ? ["clarity", lens.clarity] : null, lens ? ["polysemanticity", lens.polysemanticity] : null,
        ["max activation", st.max], ["mean ± std", st.mean, "± " + fmt(st.std)]]),
      h("h2", {}, "Most activating (top " + p.top.ids.length + " of " + p.k + ")"),
      h("div", { class: "exemplars", id: "top-exemplars" }, p.top.ids.map((id, i) => thumb(name, id, fmt(p.top.vals[i]),
        { eager: i < 8 }))),
      h("h2", {}, "Least activating (bottom " + p.bottom.ids.length + ")"),
      h("div", { class: "exemplars", id: "bottom-exemplars" }, p.bottom.ids.map((id, i) => thumb(name, id, fmt(p.bottom.vals[i])))),
      p.featviz ? featvizSection(name, layer, p.featviz) : null,
      p.mis ? misSection(name, p.mis) : null,
      lens ? lensSection(name, lens) : null,
      labelsSection(p.labels),
      relevanceSection(name, p.relevance),
      p.audits.length ? h("section", {}, h("h2", {}, "Audit verdicts"), table([
        { key: "class_name", label: "class" }, { key: "verdict", label: "verdict", render: (r) =>
          h("span", { class: "verdict " + r.verdict }, r.verdict) },
        { key: "a_valid", label: "a valid", num: true }, { key: "valid_concept", label: "best valid concept" },
        { key: "a_spur", label: "a spurious", num: true }, { key: "spurious_concept", label: "best spurious concept" },
        { key: "relevance", label: "relevance", num: true }], p.audits)) : null,
      h("section", {}, h("h2", {}, "Statistics over the dataset"), table([
        { key: "n", label: "images", num: true }, { key: "min", label: "min", num: true }, { key: "max", label: "max", num: true },
        { key: "mean", label: "mean", num: true }, { key: "std", label: "std", num: true },
        { key: "nonfinite", label: "non-finite", num: true }, { key: "constant", label: "constant", render: (r) => r.constant ? "yes" : "no" },
        { key: "top_tied", label: "top tied", num: true }, { key: "bottom_tied", label: "bottom tied", num: true }],
        [st]),
        (st.top_tied || st.bottom_tied) ? h("p", { class: "muted", id: "tie-note" }, (st.top_tied || 0) + " top and " +
          (st.bottom_tied || 0) + " bottom exemplars share the value at the edge of their list: the seeded tie-break " +
          "chose which of the equal samples are shown") : null));
  }

  function featvizSection(name, layer, f) {
    const row = (items, id) => h("div", { class: "exemplars", id: id }, items.map((it) => {
      const src = featvizUrl(name, layer, f.folder, it.file);
      const fig = h("figure", { class: "exemplar featviz" }, h("img", { class: "thumb", src: src, alt: "feature visualisation",
        loading: "lazy" }), h("figcaption", {}, fmt(it.activation)));
      fig.addEventListener("click", () => window.open(src, "_blank"));
      return fig;
    }));
    const scores = f.mis !== null ? "MIS with these as explanations " + fmt(f.mis, 4) + " · with natural exemplars " +
      fmt(f.mis_exemplars, 4) + " (backend " + f.backend + ", same tasks)" : "not scored yet: unitlens mis ATLAS --explanations featviz";
    return h("section", { id: "featviz" }, h("h2", {}, "Feature visualisations"),
      h("p", { class: "muted" }, "Images optimised from noise to drive the unit up and down (" + f.steps + " steps, " +
        f.size + " px, seed " + f.seed + "); captions: the activation each reaches, against the natural extremes " +
        fmt(f.natural_top) + " (most activating image) and " + fmt(f.natural_bottom) + " (least). " + scores),
      h("h3", {}, "Driving it up"), row(f.top, "featviz-top"),
      h("h3", {}, "Driving it down"), row(f.bottom, "featviz-bottom"));
  }

  function misSection(name, m) {
    const box = h("div", { class: "task", id: "mis-task" });
    const pick = h("select", { id: "task-pick", onchange: (e) => drawTask(Number(e.target.value)) },
      m.tasks.map((t, i) => h("option", { value: i }, "task " + (i + 1) + (t.p !== undefined ? " · p " + fmt(t.p) : ""))));
    function drawTask(i) {
      const t = m.tasks[i];
      if (!t) { box.replaceChildren(h("p", { class: "muted" }, "no task")); return; }
      const has = t.delta_pos !== undefined;
      const margin = has ? t.delta_pos - t.delta_neg : null;
      box.replaceChildren(
        h("div", { class: "task-side" }, h("h3", {}, "E⁻ · least activating explanations"),
          h("div", { class: "exemplars small" }, t.neg_expl.map((id) => thumb(name, id, null, { cls: "neg" })))),
        h("div", { class: "task-queries" }, h("h3", {}, "Which query activates the unit more?"),
          h("div", { class: "queries" }, thumb(name, t.pos_query, "q⁺ (truly higher)", { cls: "pos", eager: true }),
            thumb(name, t.neg_query, "q⁻", { cls: "neg", eager: true })),
          has ? h("dl", { class: "deltas" },
            h("dt", {}, "Δ⁺ = s(q⁺,E⁺) − s(q⁺,E⁻)"), h("dd", {}, fmt(t.delta_pos, 4)),
            h("dt", {}, "Δ⁻ = s(q⁻,E⁺) − s(q⁻,E⁻)"), h("dd", {}, fmt(t.delta_neg, 4)),
            h("dt", {}, "Δ⁺ − Δ⁻"), h("dd", {}, fmt(margin, 4)),
            h("dt", {}, "p = σ((Δ⁺ − Δ⁻)/τ)"), h("dd", {}, fmt(t.p, 4)),
            h("dt", {}, "observer"), h("dd", { class: margin > 0 ? "ok" : "bad" }, margin > 0 ? "picks q⁺ ✓" : "picks q⁻ ✗"))
            : h("p", { class: "muted" }, m.note || "Δ values need the cached MIS embeddings")),
        h("div", { class: "task-side" }, h("h3", {}, "E⁺ · most activating explanations"),
          h("div", { class: "exemplars small" }, t.pos_expl.map((id) => thumb(name, id, null, { cls: "pos" })))));
    }
    drawTask(0);
    return h("section", {}, h("h2", {}, "MIS: the 2-AFC tasks"),
      h("p", { class: "muted" }, "MIS " + fmt(m.value, 4) + " · accuracy " + fmt(m.accuracy) + " · " + m.n_tasks +
        " tasks of " + m.k_expl + " explanations per side · backend " + m.backend + " · τ " + m.tau +
        (m.recomputed !== undefined ? " · from these Δ: " + fmt(m.recomputed, 4) : "") +
        (m.tasks.length < m.n_tasks ? " · this report shows " + m.tasks.length + " task (unitlens serve shows all)" : "")),
      m.tasks.length > 1 ? h("label", {}, "show ", pick) : null, box);
  }

  function lensSection(name, l) {
    const sim = l.similar || { layer: [], atlas: [], peers: [] };
    const group = (title, cards) => cards.length ? h("div", {}, h("h3", {}, title),
      h("div", { class: "grid small" }, cards.map((c) => unitCard({ ...c, showLayer: true }, "cos " + fmt(c.cos))))) : null;
    return h("section", { id: "lens" }, h("h2", {}, "SemanticLens (" + l.backend + ")"),
      l.concepts && l.concepts.length ? h("p", {}, "best concepts: ", l.concepts.map((c, i) =>
        h("span", { class: "concept" + (i === 0 && l.label !== "none" ? " best" : "") }, c.concept + " (a = " + fmt(c.a) + ")")),
        l.label === "none" ? h("span", { class: "muted" }, " — below the threshold " + fmt(l.threshold) + ": label none") : null)
        : h("p", { class: "muted" }, l.label === null ? "not labelled (run unitlens lens label)" : ""),
      h("p", { class: "muted" }, "clarity " + fmt(l.clarity) + " · polysemanticity " + fmt(l.polysemanticity) +
        " · max similarity " + fmt(l.max_similarity) + " · crop " + l.crop + " · m " + l.m),
      h("h3", {}, "Concept examples" + (l.crop && l.crop !== "none" ? " (cropped as embedded)" : "")),
      h("div", { class: "exemplars", id: "concept-examples" }, l.examples.map((e) => cropThumb(name, e, fmt(e.val)))),
      group("Most similar units in this layer", sim.layer),
      group("… in other layers", sim.atlas),
      sim.peers.map((p) => group("… in atlas " + p.atlas, p.units)));
  }

  function labelsSection(labels) {
    if (!labels || !labels.length) return null;
    return h("section", { id: "labels" }, h("h2", {}, "Labels"), table([
      { key: "set", label: "method" }, { key: "label", label: "label" },
      { key: "score", label: "score", num: true }, { key: "score_name", label: "score is" },
      { key: "concepts", label: "concepts from" }], labels));
  }

  function relevanceSection(name, r) {
    if (!r || (!r.classes.length && !r.predicted.length)) return null;
    return h("section", {}, h("h2", {}, "Relevance (CRP)"),
      r.classes.length ? table([
        { key: "class_name", label: "class" }, { key: "rel_mean", label: "mean share", num: true },
        { key: "rel_max", label: "max share", num: true }, { key: "rank", label: "rank in layer", num: true },
        { key: "n_samples", label: "samples", num: true },
        { key: "top_ids", label: "most relevant samples", render: (row) => h("div", { class: "exemplars tiny" },
          row.top_ids.slice(0, 5).map((id) => thumb(name, id, null))) }], r.classes) : null,
      r.predicted.length ? h("p", {}, "most relevant for its predicted classes: " +
        r.predicted.map((c) => c.class_name + " (" + fmt(c.rel_mean) + ")").join(", ")) : null);
  }

  // ---------------------------------------------------------------------------------------------- search
  async function viewSearch(name) {
    const o = await api(["atlas", name]);
    document.title = "search · " + name;
    crumbs([["home", []], [name, ["atlas", name]], ["search", null]]);
    if (MODE !== "server") {
      return h("section", { "data-view": "search" }, h("h1", {}, "Search"),
        h("p", { class: "note" }, "Text search, image probes and labelling need the live server and the lens backend: " +
          "unitlens serve " + o.path));
    }
    if (!o.lens) return h("section", { "data-view": "search" }, h("h1", {}, "Search"), notes(o.notes));
    const status = h("p", { class: "muted", id: "search-status" });
    const results = h("div", { class: "grid", id: "search-results" });
    const layerSelect = h("select", { id: "search-layer" }, h("option", { value: "" }, "all embedded layers"),
      o.lens.layers.map((l) => h("option", { value: l }, l)));
    const layers = () => (layerSelect.value ? [layerSelect.value] : null);
    function show(res, what) {
      status.textContent = res.results.length + " units for " + what + " · " + fmt(res.seconds) + " s" +
        (res.load_seconds > 0.05 ? " (+ " + fmt(res.load_seconds) + " s loading the backend)" : "") + " · " + res.backend +
        " · a = cos(θ, probe)" + (res.null ? " − cos(θ, null)" : "");
      results.replaceChildren(...res.results.map((c) => unitCard({ ...c, showLayer: true },
        "#" + c.rank + " · a " + fmt(c.a))));
    }
    async function run(what, call) {
      status.textContent = "searching… (the first search loads the backend)";
      results.replaceChildren();
      try { show(await call(), what); } catch (err) { status.textContent = "error: " + err.message; }
    }
    const text = h("input", { id: "search-text", type: "search", placeholder: "a concept, e.g. star" });
    const textForm = h("form", { class: "search-form", onsubmit: (e) => { e.preventDefault();
      run("“" + text.value + "”", () => post(["atlas", name, "search"], { text: text.value, layers: layers() })); } },
      text, h("button", { type: "submit", id: "search-button" }, "Search"));
    const files = h("input", { id: "search-images", type: "file", accept: "image/*", multiple: true });
    const imageForm = h("form", { class: "search-form", onsubmit: (e) => { e.preventDefault();
      const form = new FormData();
      for (const f of files.files) form.append("image", f);
      run(files.files.length + " image(s)", () => post(["atlas", name, "search", "image"], form, true)); } },
      files, h("button", { type: "submit", id: "image-button" }, "Search with images"));
    const concepts = h("textarea", { id: "concepts", rows: 8, placeholder: "one concept per line" });
    const labelOut = h("div", { id: "label-results" });
    const labelForm = h("form", { class: "label-form", onsubmit: async (e) => {
      e.preventDefault();
      labelOut.replaceChildren(h("p", { class: "muted" }, "labelling…"));
      try {
        const res = await post(["atlas", name, "label"], { concepts: concepts.value.split("\n"), layers: layers() });
        const detail = h("div", { class: "grid small" });
        labelOut.replaceChildren(h("p", { class: "muted" }, res.n_units + " units labelled in " + fmt(res.seconds) +
          " s (not stored; threshold " + res.threshold + ")"),
          h("div", { class: "concept-list" }, res.concepts.map((c) => h("button", { type: "button", class: "concept",
            onclick: () => detail.replaceChildren(...c.best.map((b) => unitCard({ ...b, showLayer: true }, "a " + fmt(b.a)))) },
            c.concept + " · " + c.units))), detail);
      } catch (err) { labelOut.replaceChildren(h("p", { class: "note" }, err.message)); }
    } }, concepts, h("button", { type: "submit", id: "label-button" }, "Label units"));
    if (o.lens.concepts_list) concepts.value = o.lens.concepts_list.join("\n");
    return h("section", { "data-view": "search" }, h("h1", {}, "Search the lens of " + name),
      h("p", { class: "muted" }, "backend " + o.lens.backend + " · layers " + o.lens.layers.join(", ")),
      h("label", {}, "layers ", layerSelect),
      h("h2", {}, "Text probe"), textForm, h("h2", {}, "Image probe"), imageForm, status, results,
      h("h2", {}, "Label with a concept list"), labelForm, labelOut);
  }

  // ---------------------------------------------------------------------------------------------- study
  async function viewStudy(name) {
    const d = await api(["study", name]);
    document.title = d.title + " · study";
    crumbs([["home", []], ["study " + d.title, null]]);
    const known = ["name", "model", "checkpoint", "epoch", "accuracy", "units", "constant", "mis_mean", "mis_p5",
      "mis_p95", "mis_worst5_mean", "mis_accuracy", "clarity_mean", "polysemanticity_mean", "redundancy_mean"];
    const cols = known.filter((k) => d.columns.includes(k)).map((k) => ({
      key: k, label: k.replace(/_/g, " "), num: !["name", "model", "checkpoint"].includes(k),
      render: k === "name" ? (r) => r.atlas ? link(["atlas", r.atlas], r.name) : (r.name || "–") : null }));
    if (!cols.length) cols.push({ key: "name", label: "name", render: (r) => r.atlas ? link(["atlas", r.atlas], r.name) : r.name });
    cols.push({ key: "status", label: "status", render: (r) => r.error ? h("span", { class: "warn", title: r.error }, "failed") :
      (r.status && typeof r.status === "object" ? Object.entries(r.status).map(([k, v]) => k + ": " + v).join(", ") :
        (r.status || "")) });
    const ranked = d.entries.filter((e) => typeof e.mis_mean === "number");
    return h("section", { "data-view": "study" },
      h("h1", {}, "Study " + d.title), h("p", { class: "muted" }, d.path + " · " + d.entries.length + " entries"),
      ranked.length ? h("section", {}, h("h2", {}, "Ranking by MIS"), rankingChart(ranked)) : null,
      h("h2", {}, "Entries"), table(cols, d.entries, { cls: "study" }),
      figures("study", name, d.figures));
  }

  function rankingChart(rows) {
    const W = 960, RH = 22, L = 220, R = 60;
    const H = rows.length * RH + 46;
    const lo = Math.min(...rows.map((r) => r.mis_p5 ?? r.mis_mean)), hi = Math.max(...rows.map((r) => r.mis_p95 ?? r.mis_mean));
    const span = hi - lo || 1;
    const x = (v) => L + (v - lo) / span * (W - L - R);
    return s("svg", { class: "chart ranking", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "MIS ranking" },
      rows.map((r, i) => {
        const y = 10 + i * RH + RH / 2;
        return s("g", { class: "rank-row", onclick: () => r.atlas && go(["atlas", r.atlas]) },
          s("text", { x: L - 8, y: y + 4, "text-anchor": "end", class: "tick" }, r.name),
          r.mis_p5 !== undefined && r.mis_p5 !== null ? s("line", { x1: x(r.mis_p5), x2: x(r.mis_p95), y1: y, y2: y, class: "range" }) : null,
          s("circle", { cx: x(r.mis_mean), cy: y, r: 5, class: "point" }),
          s("text", { x: W - R + 6, y: y + 4, class: "tick" }, fmt(r.mis_mean)),
          s("title", {}, r.name + ": MIS " + fmt(r.mis_mean) + (r.mis_p5 !== undefined ? " (p5–p95 " + fmt(r.mis_p5) + "–" +
            fmt(r.mis_p95) + ")" : "")));
      }),
      [lo, lo + span / 2, hi].map((t) => s("text", { x: x(t), y: H - 22, class: "tick", "text-anchor": "middle" },
        t.toFixed(3))),
      s("text", { x: L, y: H - 4, class: "tick" }, "line: p5–p95 of the units' MIS, dot: mean"));
  }

  // ---------------------------------------------------------------------------------------------- start
  document.getElementById("home-link").setAttribute("href", href([]));
  document.getElementById("mode").textContent = MODE === "server" ? "live" : "static report";
  render();
})();
