/* erab operator console: live updates by polling the console's JSON feeds (every value is
   computed by the server; this script only lays it out), table sort and filter. */
(function () {
  "use strict";
  var body = document.body;
  var L = JSON.parse((document.getElementById("labels") || {}).textContent || "{}");
  function text(v, digits) {
    if (v === null || v === undefined) { return "—"; }
    if (typeof v === "number") {
      return v.toLocaleString(undefined, {minimumFractionDigits: digits === undefined ? 1 : digits,
                                          maximumFractionDigits: digits === undefined ? 1 : digits});
    }
    return String(v);
  }
  function jst(iso) {
    if (!iso) { return "—"; }
    var d = new Date(Date.parse(iso) + 9 * 3600 * 1000);
    return d.toISOString().slice(0, 19).replace("T", " ");
  }
  function get(obj, path) {
    return path.split(".").reduce(function (o, k) { return o === null || o === undefined ? o : o[k]; }, obj);
  }
  function bind(data) {
    document.querySelectorAll("[data-bind]").forEach(function (node) {
      var v = get(data, node.getAttribute("data-bind"));
      var kind = node.getAttribute("data-format");
      if (kind === "badge") { node.textContent = L[v] || v; node.className = "badge " + v; }
      else if (kind === "time") { node.textContent = jst(v); }
      else if (kind === "int") { node.textContent = text(v, 0); }
      else { node.textContent = text(v); }
    });
  }
  function poll(url, every, fn) {
    var busy = false;
    function once() {
      if (busy) { return; }
      busy = true;
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) {
          if (r.status === 401) { window.location = "/login?next=" + encodeURIComponent(location.pathname); }
          return r.ok ? r.json() : null;
        })
        .then(function (data) { if (data) { fn(data); body.setAttribute("data-updated", data.at || ""); } })
        .catch(function () {})
        .then(function () { busy = false; });
    }
    once();
    return setInterval(once, every);
  }
  function td(row, value, cls) {
    var cell = document.createElement("td");
    if (cls) { cell.className = cls; }
    if (value instanceof Node) { cell.appendChild(value); } else { cell.textContent = value; }
    row.appendChild(cell);
    return cell;
  }
  function link(href, label) { var a = document.createElement("a"); a.href = href; a.textContent = label; return a; }
  function badge(v) { var s = document.createElement("span"); s.className = "badge " + v; s.textContent = L[v] || v; return s; }

  /* sortable, filterable tables: <th data-sort="key" data-type="num|text"> */
  function sortable(table, state) {
    table.querySelectorAll("th[data-sort]").forEach(function (th) {
      th.addEventListener("click", function () {
        var key = th.getAttribute("data-sort");
        state.dir = state.key === key ? -state.dir : 1;
        state.key = key;
        table.querySelectorAll("th").forEach(function (o) { o.classList.remove("asc", "desc"); });
        th.classList.add(state.dir > 0 ? "asc" : "desc");
        state.redraw();
      });
    });
  }
  function ordered(rows, state) {
    if (!state.key) { return rows; }
    return rows.slice().sort(function (a, b) {
      var x = a[state.key], y = b[state.key];
      if (x === null || x === undefined) { return 1; }
      if (y === null || y === undefined) { return -1; }
      return (x < y ? -1 : x > y ? 1 : 0) * state.dir;
    });
  }

  var pages = {};
  pages.fleet = function () {
    var table = document.getElementById("sites"), tbody = table.querySelector("tbody");
    var filter = document.getElementById("filter"), grid = document.getElementById("site-grid");
    var state = {key: null, dir: 1, rows: []};
    state.redraw = function () {
      var q = (filter.value || "").toLowerCase();
      var rows = ordered(state.rows, state).filter(function (r) {
        return !q || [r.site_id, r.name, r.kind, r.gateway_status].join(" ").toLowerCase().indexOf(q) >= 0;
      });
      var fresh = document.createElement("tbody");
      rows.forEach(function (r) {
        var tr = document.createElement("tr");
        tr.setAttribute("data-site", r.site_id);
        td(tr, link("/sites/" + encodeURIComponent(r.site_id), r.site_id));
        td(tr, r.kind);
        td(tr, badge(r.gateway_status || "—"));
        td(tr, r.online + " / " + r.resources, "num");
        td(tr, text(r.power_kw, 2), "num");
        td(tr, text(r.soc_pct), "num");
        td(tr, text(r.flex_down_kw, 2), "num");
        td(tr, text(r.flex_up_kw, 2), "num");
        td(tr, jst(r.last_seen));
        fresh.appendChild(tr);
      });
      table.replaceChild(fresh, tbody);
      tbody = fresh;
      document.getElementById("shown").textContent = rows.length + " / " + state.rows.length;
    };
    sortable(table, state);
    filter.addEventListener("input", state.redraw);
    function drawGrid(rows) {
      var fragment = document.createDocumentFragment();
      var max = Math.max.apply(null, rows.map(function (r) { return r.power_kw || 0; }).concat([0.001]));
      rows.forEach(function (r) {
        var a = document.createElement("a");
        a.href = "/sites/" + encodeURIComponent(r.site_id);
        var p = r.power_kw || 0;
        a.className = "cell " + (r.gateway_status !== "online" ? "off" : p < 0 ? "gen" : "p" + Math.min(4, Math.floor(p / max * 5)));
        a.title = r.site_id + ": " + text(r.power_kw, 2) + " kW";
        a.textContent = r.site_id.charAt(0) + r.site_id.replace(/^[^0-9]*/, "");
        fragment.appendChild(a);
      });
      while (grid.firstChild) { grid.removeChild(grid.firstChild); }
      grid.appendChild(fragment);
    }
    poll("/ui/api/fleet", 3000, function (data) {
      bind(data);
      state.rows = data.sites;
      state.redraw();
      drawGrid(data.sites);
      var alerts = document.querySelector("#alerts tbody"), fresh = document.createElement("tbody");
      (data.alerts || []).forEach(function (a) {
        var tr = document.createElement("tr");
        td(tr, jst(a.raised_at)); td(tr, badge(a.kind)).firstChild.className = "badge warn";
        td(tr, a.message, "wrap");
        fresh.appendChild(tr);
      });
      if (!(data.alerts || []).length) { var none = document.createElement("tr"); td(none, L.no_alerts, "muted"); fresh.appendChild(none); }
      alerts.parentNode.replaceChild(fresh, alerts);
      document.getElementById("alert-count").textContent = (data.alerts || []).length;
    });
    poll("/ui/api/fleet/series", 5000, function (data) {
      ErabChart.line(document.getElementById("fleet-chart"), {
        yLabel: "kW", empty: L.none_yet,
        series: [{name: L.actual || "fleet kW", t: data.t, y: data.power_kw, color: "#0b6bcb"}]});
    });
  };
  pages.site = function () {
    var id = body.getAttribute("data-site");
    var palette = ["#0b6bcb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#4b5563"];
    poll("/ui/api/sites/" + encodeURIComponent(id), 3000, function (data) {
      data.devices.forEach(function (d) {
        var tr = document.querySelector("tr[data-device='" + d.resource_id + "']");
        if (!tr) { return; }
        tr.querySelector(".power").textContent = text(d.power_kw, 2);
        tr.querySelector(".soc").textContent = text(d.soc_pct);
        tr.querySelector(".setpoint").textContent = text(d.setpoint_c);
        tr.querySelector(".room").textContent = text(d.room_temp_c);
        var b = tr.querySelector(".state"); b.textContent = L[d.online ? "online" : "offline"];
        b.className = "state badge " + (d.online ? "online" : "offline");
      });
      var series = Object.keys(data.power_series).map(function (k, i) {
        return {name: k.split(".").pop(), t: data.power_series[k].t, y: data.power_series[k].power_kw,
                color: palette[i % palette.length]};
      });
      ErabChart.line(document.getElementById("site-chart"), {yLabel: "kW", series: series, empty: L.none_yet});
    });
  };
  pages.events = function () {
    poll("/ui/api/events", 3000, function (data) {
      data.events.forEach(function (e) {
        var tr = document.querySelector("tr[data-event='" + e.event_id + "']");
        if (!tr) { return; }
        var b = tr.querySelector(".stage"); b.textContent = L[e.stage] || e.stage; b.className = "stage badge " + e.stage;
        tr.querySelector(".acks").textContent = (e.commands.acknowledged || 0) + " / " +
          Object.keys(e.commands).reduce(function (s, k) { return s + e.commands[k]; }, 0);
      });
      var svg = document.getElementById("timeline");
      if (!svg) { return; }
      var spans = data.events.slice(0, 20).map(function (e) {  // the newest 20
        return {id: e.event_id, s: Date.parse(e.start) / 1000, e: Date.parse(e.end) / 1000, stage: e.stage};
      });
      var now = Date.parse(data.at) / 1000;
      svg.style.height = Math.max(120, 30 * spans.length + 50) + "px";
      var series = spans.map(function (x, i) {
        return {name: x.id, t: [x.s, x.e], y: [spans.length - i, spans.length - i], width: 8,
                color: x.stage === "cancelled" ? "#b91c1c" : x.stage === "completed" ? "#6366f1" :
                       x.stage === "active" ? "#15803d" : "#d97706"};
      });
      series.push({name: "now", t: [now, now], y: [0.3, spans.length + 0.7], color: "#1d2330",
                   dash: "4 3", width: 1, label: false});
      ErabChart.line(svg, {series: series, empty: L.none_yet, hideY: true, inlineLabels: true});
    });
  };
  pages.event = function () {
    var id = body.getAttribute("data-event");
    poll("/ui/api/events/" + encodeURIComponent(id), 2000, function (data) {
      bind(data);
      var ev = data.event;
      ErabChart.line(document.getElementById("event-chart"), {
        yLabel: "kW", empty: L.none_yet, band: [Date.parse(ev.start) / 1000, Date.parse(ev.end) / 1000],
        series: [{name: L.actual, t: data.chart.t, y: data.chart.actual_kw, color: "#0b6bcb"},
                 {name: L.baseline, t: data.chart.t, y: data.chart.baseline_kw, color: "#667085", dash: "6 4"},
                 {name: L.target, t: data.chart.t, y: data.chart.target_kw, color: "#d97706"}]});
      var tbody = document.querySelector("#slots tbody"), fresh = document.createElement("tbody");
      data.slots.forEach(function (s) {
        var tr = document.createElement("tr");
        td(tr, jst(s.slot)); td(tr, text(s.baseline_kw, 2), "num"); td(tr, text(s.target_kw, 2), "num");
        td(tr, text(s.planned_kw, 2), "num"); td(tr, text(s.actual_kw, 2), "num");
        td(tr, text(s.delivered_kw, 2), "num"); td(tr, s.ratio === null ? "—" : Math.round(s.ratio * 100) + " %", "num");
        fresh.appendChild(tr);
      });
      tbody.parentNode.replaceChild(fresh, tbody);
      function rows(tableId, items, cells, empty) {
        var table = document.getElementById(tableId);
        if (!table) { return; }
        var old = table.querySelector("tbody"), fresh = document.createElement("tbody");
        items.forEach(function (item) {
          var tr = document.createElement("tr");
          cells(item).forEach(function (c) { td(tr, c); });
          fresh.appendChild(tr);
        });
        if (!items.length) { var tr = document.createElement("tr"); td(tr, empty).colSpan = 5; fresh.appendChild(tr); }
        table.replaceChild(fresh, old);
      }
      rows("refusals", data.refusals, function (r) {
        return [r.gateway, r.device_id || "—", badge(r.stage), r.reason]; }, L.none_yet);
      rows("history", ev.history, function (h) {
        return [jst(h.at), h.trigger + " → " + (L[h.stage] || h.stage), h.actor]; }, L.none_yet);
      rows("acks-table", data.acknowledgements, function (a) {
        return [a.gateway, a.device_id || "—", a.type || "—", jst(a.at),
                a.outcomes.map(function (o) { return (o.outcome || "") + (o.reason ? " (" + o.reason + ")" : ""); }).join(" ")];
      }, L.none_yet);
      var cancel = document.getElementById("cancel-form");
      if (cancel && !data.cancellable) { cancel.style.display = "none"; }
    });
  };
  /* forms that change something irreversible ask first: <form data-confirm="..."> */
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  });
  var page = body.getAttribute("data-page");
  if (pages[page]) { pages[page](); }
})();
