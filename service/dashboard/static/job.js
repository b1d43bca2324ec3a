// Live job status: follow GET /api/v1/jobs/{id}/events (server-sent events; polling every
// second where the stream fails) while the job is queued or running, update the status (an
// aria-live region) and the time used against the timeout, and extend the bound plots that
// the server drew (their points are in data-points); reload once the job finishes, to show
// its result.  The plots' scale follows service/dashboard/views.py (Scale): 0 always
// inside, a leading bound far below the later ones drawn on the bottom edge.
(function () {
  "use strict";
  var box = document.getElementById("job");
  if (!box) { return; }
  var api = box.dataset.api;
  var NS = "http://www.w3.org/2000/svg";
  var W = 440, H = 200, L = 64, B = 36, T = 14, R = 14, OFF_SCALE = 5, N_TICKS = 6;
  var series = {time: seed("plot-time"), domains: seed("plot-domains")};

  function seed(id) {
    var svg = document.querySelector("#" + id + " svg");
    try { return JSON.parse((svg && svg.dataset.points) || "[]"); } catch (e) { return []; }
  }
  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function fmt(v) { return Number(v.toPrecision(3)).toString(); }
  function fit(ys) {  // views.Scale.fit
    var top = Math.max(0, Math.max.apply(null, ys)), cut = 0;
    while (cut < ys.length - 1 &&
           top - ys[cut] > OFF_SCALE * ((top - Math.min.apply(null, ys.slice(cut + 1))) || 1e-300)) {
      cut += 1;
    }
    var lo = Math.min(0, Math.min.apply(null, ys.slice(cut))), span = (top - lo) || Math.abs(top) || 1;
    return {lo: lo - 0.08 * span, hi: top + 0.08 * span, cut: cut};
  }
  function ticks(s) {  // views.Scale.ticks
    var raw = (s.hi - s.lo) / N_TICKS, step = Math.pow(10, Math.floor(Math.log10(raw)));
    step *= [1, 2, 5, 10].find(function (m) { return m * step >= raw; });
    var out = [];
    for (var k = Math.ceil(s.lo / step); k <= Math.floor(s.hi / step); k++) { out.push(k * step); }
    return out;
  }
  function plot(target, points, xlabel, title) {
    if (points.length < 2) { return; }  // the server's drawing already shows one point
    var xs = points.map(function (p) { return p[0]; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    if (x1 <= x0) { x0 -= 1; x1 += 1; }
    var s = fit(points.map(function (p) { return p[1]; }));
    var w = W - L - R, h = H - T - B;
    function sx(x) { return L + (x - x0) / (x1 - x0) * w; }
    function sy(y) { return T + (s.hi - Math.max(y, s.lo)) / (s.hi - s.lo) * h; }
    var svg = el("svg", {"class": "plot", viewBox: "0 0 " + W + " " + H, role: "img",
                         "aria-label": title, "data-points": JSON.stringify(points)});
    svg.appendChild(el("title", {}, title));
    svg.appendChild(el("rect", {"class": "frame", x: L, y: T, width: w, height: h}));
    ticks(s).forEach(function (t) {
      svg.appendChild(el("line", {"class": "grid", x1: L, x2: L + w, y1: sy(t), y2: sy(t)}));
      svg.appendChild(el("text", {x: L - 4, y: sy(t) + 4, "text-anchor": "end"}, fmt(t)));
    });
    svg.appendChild(el("line", {"class": "zero", x1: L, x2: L + w, y1: sy(0), y2: sy(0)}));
    svg.appendChild(el("polyline", {"class": "series", points: points.map(function (p) {
      return sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); }).join(" ")}));
    if (s.cut) {
      var g = el("g", {"class": "offscale"}), cut = points.slice(0, s.cut);
      cut.forEach(function (p) {
        g.appendChild(el("path", {d: "M" + (sx(p[0]) - 4) + "," + (sy(s.lo) - 6) + " h8 l-4,6 z"}));
      });
      var lowest = Math.min.apply(null, cut.map(function (p) { return p[1]; }));
      g.appendChild(el("text", {x: sx(cut[0][0]) + 8, y: sy(s.lo) - 4},
        (cut.length === 1 ? "first bound" : "first bounds") + " down to " + fmt(lowest) + ", below the scale"));
      svg.appendChild(g);
    }
    svg.appendChild(el("text", {x: L, y: H - 20}, fmt(x0)));
    svg.appendChild(el("text", {x: L + w, y: H - 20, "text-anchor": "end"}, fmt(x1)));
    svg.appendChild(el("text", {x: L + w / 2, y: H - 4, "text-anchor": "middle"}, xlabel));
    var holder = document.getElementById(target);
    if (holder) { holder.replaceChildren(svg); }
  }
  function extend(p) {
    if (typeof p.lower_bound !== "number") { return; }
    var last = series.time[series.time.length - 1];
    if (last && last[0] === p.elapsed && last[1] === p.lower_bound) { return; }
    series.time.push([p.elapsed, p.lower_bound]);
    series.domains.push([p.domains_done, p.lower_bound]);
    plot("plot-time", series.time, "seconds", "Global lower bound vs time");
    plot("plot-domains", series.domains, "domains done", "Global lower bound vs domains");
  }
  function text(id, value) {
    var node = document.getElementById(id);
    if (node) { node.textContent = value; }
  }
  function show(job) {
    var outcome = job.state === "succeeded" ? (job.verdict || "unknown") : job.state;
    var badge = document.querySelector("#outcome .badge");
    badge.className = "badge v-" + outcome;
    badge.textContent = outcome;
    text("state", job.state);
    text("message", job.message || "");
    var p = job.progress;
    if (!p) { return; }
    text("p-stage", p.stage);
    text("p-elapsed", p.elapsed.toFixed(1) + " s");
    text("p-domains", p.domains_open + " / " + p.domains_done);
    var bar = document.getElementById("p-time");
    if (bar) {
      bar.value = Math.min(p.elapsed, Number(bar.max));
      text("p-time-text", p.elapsed.toFixed(1) + " s of the " + Number(bar.max) + " s timeout");
    }
    if (document.getElementById("p-bound")) {
      text("p-bound", p.lower_bound === null ? "–" : Number(p.lower_bound.toPrecision(6)).toString());
    }
    var bracket = document.getElementById("p-bracket");  // a Lipschitz job's [lower, upper]
    if (bracket && typeof p.lipschitz_upper === "number") {
      bracket.textContent = (typeof p.lipschitz_lower === "number"
        ? "[" + Number(p.lipschitz_lower.toPrecision(6)) + ", " : "≤ ")
        + Number(p.lipschitz_upper.toPrecision(6)) + (typeof p.lipschitz_lower === "number" ? "]" : "");
    }
    extend(p);
  }
  function finished(job) {
    return ["succeeded", "failed", "cancelled"].indexOf(job.state) >= 0;
  }
  function poll() {
    fetch(api, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (job) {
        show(job);
        if (finished(job)) { window.location.reload(); } else { window.setTimeout(poll, 1000); }
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }
  function follow() {
    if (!window.EventSource) { poll(); return; }
    var stream = new EventSource(api + "/events");
    stream.addEventListener("progress", function (e) { show(JSON.parse(e.data)); });
    stream.addEventListener("finished", function () {
      stream.close();
      window.location.reload();
    });
    stream.onerror = function () {  // refused, or cut: poll instead
      if (stream.readyState === EventSource.CLOSED) { window.setTimeout(poll, 1000); }
    };
  }
  if (box.dataset.finished !== "true") { follow(); }
}());
