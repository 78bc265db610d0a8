/* erab's own small chart library: SVG line charts over time, no dependencies.
   ErabChart.line(element, {series: [{name, t: [POSIX s], y: [number|null], color, dash}],
                            yLabel, band: [t0, t1], hideY, inlineLabels})
   draws into element (replacing it); inlineLabels names each series beside its first point
   instead of a legend (a timeline). */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) { node.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(node); }
    return node;
  }
  function niceStep(span, ticks) {
    var raw = span / Math.max(ticks, 1), mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    var norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  }
  function hhmm(t) {  // JST wall time: the market's clock
    var d = new Date((t + 9 * 3600) * 1000);
    var h = d.getUTCHours(), m = d.getUTCMinutes();
    return (h < 10 ? "0" : "") + h + ":" + (m < 10 ? "0" : "") + m;
  }
  function line(target, spec) {
    var w = target.clientWidth || 600, h = target.clientHeight || 260;
    var pad = {l: 56, r: 12, t: 22, b: 26};
    while (target.firstChild) { target.removeChild(target.firstChild); }
    var svg = el("svg", {width: w, height: h, viewBox: "0 0 " + w + " " + h, role: "img"}, target);
    var ts = [], ys = [];
    spec.series.forEach(function (s) {
      s.t.forEach(function (t, i) { if (s.y[i] !== null && s.y[i] !== undefined) { ts.push(t); ys.push(s.y[i]); } });
    });
    if (spec.band) { ts.push(spec.band[0], spec.band[1]); }
    if (!ys.length) {
      el("text", {x: w / 2, y: h / 2, "text-anchor": "middle"}, svg).textContent = spec.empty || "—";
      return svg;
    }
    var t0 = Math.min.apply(null, ts), t1 = Math.max.apply(null, ts);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (t1 === t0) { t1 = t0 + 60; }
    if (y1 === y0) { y1 += 1; y0 -= 1; }
    var ypad = (y1 - y0) * 0.08; y0 -= ypad; y1 += ypad;
    var X = function (t) { return pad.l + (t - t0) / (t1 - t0) * (w - pad.l - pad.r); };
    var Y = function (y) { return h - pad.b - (y - y0) / (y1 - y0) * (h - pad.t - pad.b); };
    if (spec.band) {
      el("rect", {x: X(spec.band[0]), y: pad.t, width: Math.max(1, X(spec.band[1]) - X(spec.band[0])),
                  height: h - pad.t - pad.b, fill: "#fef3c7"}, svg);
    }
    var step = niceStep(y1 - y0, 5);
    for (var v = Math.ceil(y0 / step) * step; !spec.hideY && v <= y1; v += step) {
      el("line", {x1: pad.l, x2: w - pad.r, y1: Y(v), y2: Y(v), "class": "axis"}, svg);
      el("text", {x: pad.l - 6, y: Y(v) + 4, "text-anchor": "end"}, svg).textContent =
        Math.abs(step) < 1 ? (Math.abs(v) < 1e-9 ? 0 : v).toFixed(1)
                           : (Math.round(v) || 0).toLocaleString();
    }
    var tstep = niceStep((t1 - t0) / 60, 6) * 60;
    for (var t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
      el("text", {x: X(t), y: h - 8, "text-anchor": "middle"}, svg).textContent = hhmm(t);
    }
    if (spec.yLabel) { el("text", {x: 4, y: 12}, svg).textContent = spec.yLabel; }
    var lx = pad.l + 4;
    spec.series.forEach(function (s) {
      var d = "", pen = false;
      s.t.forEach(function (t, i) {
        var y = s.y[i];
        if (y === null || y === undefined) { pen = false; return; }
        d += (pen ? "L" : "M") + X(t).toFixed(1) + " " + Y(y).toFixed(1);
        pen = true;
      });
      if (d) {
        el("path", {d: d, fill: "none", stroke: s.color || "#0b6bcb", "stroke-width": s.width || 2,
                    "stroke-dasharray": s.dash || "none", "data-series": s.name}, svg);
      }
      if (spec.inlineLabels) {  // a name beside each series (a timeline's bars)
        var first = s.y.findIndex(function (y) { return y !== null && y !== undefined; });
        if (first >= 0 && s.label !== false) {
          el("text", {x: Math.max(pad.l, X(s.t[first])) + 2, y: Y(s.y[first]) - 7,
                      "class": "legend-item"}, svg).textContent = s.name;
        }
        return;
      }
      el("rect", {x: lx, y: 6, width: 14, height: 3, fill: s.color || "#0b6bcb"}, svg);
      var label = el("text", {x: lx + 18, y: 12, "class": "legend-item"}, svg);
      label.textContent = s.name;
      lx += 26 + 7 * s.name.length;
    });
    return svg;
  }
  window.ErabChart = {line: line, hhmm: hhmm};
})();
