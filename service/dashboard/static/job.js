// Live job status: poll GET /api/v1/jobs/{id} every second while the job is queued or
// running, update the status (an aria-live region) and redraw the bound plots from the
// progress seen so far; reload once the job finishes, to show its result.
(function () {
  "use strict";
  var box = document.getElementById("job");
  if (!box) { return; }
  var api = box.dataset.api;
  var storeKey = "nnverify-history-" + box.dataset.jobId;
  var history = [];
  try { history = JSON.parse(sessionStorage.getItem(storeKey) || "[]"); } catch (e) { history = []; }
  var NS = "http://www.w3.org/2000/svg";
  var W = 440, H = 200, L = 64, B = 36, T = 14, R = 14;

  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function fmt(v) { return Number(v.toPrecision(3)).toString(); }
  function range(lo, hi, margin) {
    if (lo === hi) { var pad = Math.abs(lo) * 0.1 || 1; return [lo - pad, hi + pad]; }
    var m = (hi - lo) * (margin || 0);
    return [lo - m, hi + m];
  }
  function plot(target, points, xlabel, title) {
    if (points.length < 2) { return; }  // the server's drawing already shows one point
    var xs = points.map(function (p) { return p[0]; });
    var ys = points.map(function (p) { return p[1]; });
    var xr = range(Math.min.apply(null, xs), Math.max.apply(null, xs));
    var yr = range(Math.min(0, Math.min.apply(null, ys)), Math.max(0, Math.max.apply(null, ys)), 0.08);
    var w = W - L - R, h = H - T - B;
    function sx(x) { return L + (x - xr[0]) / (xr[1] - xr[0]) * w; }
    function sy(y) { return T + (yr[1] - y) / (yr[1] - yr[0]) * h; }
    var svg = el("svg", {"class": "plot", viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": title});
    svg.appendChild(el("title", {}, title));
    svg.appendChild(el("rect", {"class": "frame", x: L, y: T, width: w, height: h}));
    svg.appendChild(el("line", {"class": "zero", x1: L, x2: L + w, y1: sy(0), y2: sy(0)}));
    svg.appendChild(el("polyline", {"class": "series", points: points.map(function (p) {
      return sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); }).join(" ")}));
    svg.appendChild(el("text", {x: L - 4, y: T + 10, "text-anchor": "end"}, fmt(yr[1])));
    svg.appendChild(el("text", {x: L - 4, y: T + h, "text-anchor": "end"}, fmt(yr[0])));
    svg.appendChild(el("text", {x: L, y: H - 20}, fmt(xr[0])));
    svg.appendChild(el("text", {x: L + w, y: H - 20, "text-anchor": "end"}, fmt(xr[1])));
    svg.appendChild(el("text", {x: L + w / 2, y: H - 4, "text-anchor": "middle"}, xlabel));
    var target_ = document.getElementById(target);
    if (target_) { target_.replaceChildren(svg); }
  }
  function redraw() {
    var pts = history.filter(function (p) { return typeof p.lower_bound === "number"; });
    plot("plot-time", pts.map(function (p) { return [p.elapsed, p.lower_bound]; }),
         "seconds", "Global lower bound vs time");
    plot("plot-domains", pts.map(function (p) { return [p.domains_done, p.lower_bound]; }),
         "domains done", "Global lower bound vs domains");
  }
  function remember(p) {
    var last = history[history.length - 1];
    if (last && last.elapsed === p.elapsed && last.lower_bound === p.lower_bound) { return; }
    history.push({elapsed: p.elapsed, domains_done: p.domains_done, lower_bound: p.lower_bound});
    try { sessionStorage.setItem(storeKey, JSON.stringify(history)); } catch (e) { /* full */ }
  }
  function show(job) {
    var outcome = job.state === "succeeded" ? (job.verdict || "unknown") : job.state;
    var badge = document.querySelector("#outcome .badge");
    badge.className = "badge v-" + outcome;
    badge.textContent = outcome;
    document.getElementById("state").textContent = job.state;
    document.getElementById("message").textContent = job.message || "";
    var p = job.progress;
    if (p) {
      document.getElementById("p-stage").textContent = p.stage;
      document.getElementById("p-elapsed").textContent = p.elapsed.toFixed(1) + " s";
      document.getElementById("p-domains").textContent = p.domains_open + " / " + p.domains_done;
      var bound = document.getElementById("p-bound");
      if (bound) {
        bound.textContent =
          p.lower_bound === null ? "–" : Number(p.lower_bound.toPrecision(6)).toString();
      }
      var bracket = document.getElementById("p-bracket");  // a Lipschitz job's [lower, upper]
      if (bracket && typeof p.lipschitz_upper === "number") {
        bracket.textContent = (typeof p.lipschitz_lower === "number"
          ? "[" + Number(p.lipschitz_lower.toPrecision(6)) + ", " : "≤ ")
          + Number(p.lipschitz_upper.toPrecision(6)) + (typeof p.lipschitz_lower === "number" ? "]" : "");
      }
      remember(p);
      redraw();
    }
  }
  function poll() {
    fetch(api, {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (job) {
        show(job);
        if (["succeeded", "failed", "cancelled"].indexOf(job.state) >= 0) {
          window.location.reload();
        } else {
          window.setTimeout(poll, 1000);
        }
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }
  if (box.dataset.finished === "true") {
    var last = JSON.parse(box.dataset.final || "null");
    if (last) { remember(last); }
    redraw();
  } else {
    redraw();
    window.setTimeout(poll, 1000);
  }
}());
