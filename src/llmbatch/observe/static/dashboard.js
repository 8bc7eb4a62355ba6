// llmbatch dashboard: reads /api/* and draws with DOM calls only (textContent, never
// innerHTML), so nothing from the store (custom ids, error messages) can become markup.
"use strict";

const REFRESH_MS = 2000;
let chart = null;
let openBatch = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function fmtInt(n) { return n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"); }

function money(v) {
  if (v === null || v === undefined) return "-";
  const d = Number(v);
  if (d === 0) return "0.00";
  if (Math.abs(d) >= 0.01) return d.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  return d.toFixed(6).replace(/0+$/, "");
}

function duration(s) {
  if (s === null || s === undefined) return "-";
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d" + String(Math.floor((s % 86400) / 3600)).padStart(2, "0") + "h";
}

function when(ts) {
  if (!ts) return "-";
  return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function row(cells, cls) {
  const tr = el("tr", null, cls);
  for (const c of cells) tr.append(c instanceof Node ? c : el("td", c));
  return tr;
}

function num(v, zeroDim) {
  const td = el("td", fmtInt(v), "num");
  if (zeroDim && !v) td.classList.add("zero");
  return td;
}

function banner(text) {
  const b = document.getElementById("banner");
  b.hidden = !text;
  b.textContent = text || "";
}

async function getJSON(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || ("HTTP " + r.status));
  return body;
}

function drawProgress(o) {
  const p = o.progress;
  document.getElementById("total").textContent = fmtInt(p.total);
  document.getElementById("done").textContent = fmtInt(p.done_at_provider);
  document.getElementById("read-back").textContent = fmtInt(p.read_back);
  let eta = "-";
  if (p.eta_s !== null) eta = p.eta_s === 0 ? "due now" : duration(p.eta_s);
  else if (p.total && p.done_at_provider >= p.total) eta = "done";
  else if (p.unknown_etas) eta = "unknown";
  document.getElementById("eta").textContent = eta;
  document.getElementById("deadlines").textContent = fmtInt(o.deadlines.missed) + " / " + fmtInt(o.deadlines.at_risk);
  const lease = o.lease;
  document.getElementById("lease").textContent = !lease ? "no worker yet" :
    (lease.live ? "held by " + lease.holder.split(":").slice(0, 2).join(":") : "free (no worker serving)");
  const total = p.total || 1;
  document.getElementById("bar-read").style.width = (100 * p.read_back / total) + "%";
  document.getElementById("bar-provider").style.width = (100 * Math.max(0, p.done_at_provider - p.read_back) / total) + "%";
}

function drawGrid(o) {
  const table = document.getElementById("grid");
  const states = o.states.filter((s) => o.grid.some((r) => r[s]));
  const head = row([el("th", "queue"), el("th", "provider"), el("th", "model"),
    ...states.map((s) => el("th", s, "num")), el("th", "total", "num")]);
  table.tHead.replaceChildren(head);
  const rows = o.grid.map((r, i) => {
    const tr = row([r.queue, r.provider, r.model], r.queue === "all" && i === o.grid.length - 1 ? "total" : "");
    for (const s of states) {
      const td = num(r[s], true);
      td.dataset.cell = r.queue + "/" + r.provider + "/" + r.model + "/" + s;
      if (r[s]) td.classList.add("state-" + s);
      tr.append(td);
    }
    tr.append(num(r.total));
    return tr;
  });
  fill(table.tBodies[0], rows);
  document.getElementById("grid-empty").hidden = o.grid.length > 0;
}

function drawBatches(o) {
  const rows = o.batches.map((b) => {
    const eta = b.eta_s === null ? "-" : (b.eta_s === 0 ? "due" : duration(b.eta_s));
    const tr = row([String(b.id), b.provider, b.provider_batch_id || "-", b.model, b.state,
      num(b.requests), num(b.done), num(b.failed, true), el("td", duration(b.age_s), "num"),
      el("td", eta, "num"), b.note || ""], "clickable");
    tr.dataset.batch = String(b.id);
    tr.addEventListener("click", () => { openBatch = b; drawTimeline(); });
    return tr;
  });
  fill(document.querySelector("#batches tbody"), rows);
  document.getElementById("batches-empty").hidden = o.batches.length > 0;
}

async function drawTimeline() {
  if (!openBatch) return;
  const box = document.getElementById("timeline");
  const t = await getJSON("/api/batch/" + encodeURIComponent(openBatch.id));
  document.getElementById("timeline-title").textContent =
    "Batch " + openBatch.id + " (" + (openBatch.provider_batch_id || "not sent yet") + ")";
  const items = t.events.map((e) => el("li", when(e.at) + "  " + e.kind + (e.detail ? ": " + e.detail : "")));
  document.getElementById("timeline-events").replaceChildren(...items);
  box.hidden = false;
}

function drawBudgets(o) {
  const rows = o.budgets.map((b) => {
    const meter = el("div", null, "meter" + (b.pct >= 100 ? " bad" : b.pct >= 90 ? " warn" : ""));
    const fillEl = el("div");
    fillEl.style.width = Math.min(100, b.pct || 0) + "%";
    meter.append(fillEl);
    const used = el("td");
    used.append(meter, document.createTextNode(" " + (b.pct === null ? "-" : b.pct + " %")));
    return row([b.queue, b.period, el("td", money(b.limit_usd), "num"), el("td", money(b.committed_usd), "num"),
      el("td", money(b.remaining_usd), "num"), used]);
  });
  fill(document.querySelector("#budgets tbody"), rows);
  document.getElementById("budgets-empty").hidden = o.budgets.length > 0;
  const held = o.held.map((h) => el("li", fmtInt(h.count) + " requests held: " + h.reason));
  document.getElementById("held").replaceChildren(...held);
}

function drawFailures(o) {
  const rows = o.failures.map((f) => row([f.queue, f.custom_id, f.model, f.status_code === null ? "-" : String(f.status_code),
    el("td", (f.error_code ? f.error_code + ": " : "") + (f.error_message || ""), "wrap bad")]));
  fill(document.querySelector("#failures tbody"), rows);
  document.getElementById("failures-empty").hidden = o.failures.length > 0;
  const events = o.events.map((e) => row([when(e.at), e.kind, e.batch_id === null ? "-" : String(e.batch_id),
    el("td", e.detail || "", "wrap")]));
  fill(document.querySelector("#events tbody"), events);
}

async function drawCosts() {
  const c = await getJSON("/api/costs");
  const xs = c.days.map((d) => d.at);
  const data = [xs, c.days.map((d) => Number(d.batch_usd)), c.days.map((d) => Number(d.realtime_usd))];
  document.getElementById("cost-total").textContent = "all days: batch $" + money(c.total.batch_usd) +
    ", real time would have been $" + money(c.total.realtime_usd) + ", saved $" + money(c.total.saved_usd);
  const box = document.getElementById("chart");
  box.dataset.days = String(c.days.length);
  if (typeof uPlot === "undefined") return;
  const width = Math.max(300, box.clientWidth || 500);
  if (chart) { chart.setData(data); chart.setSize({ width, height: 220 }); return; }
  const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined;
  chart = new uPlot({
    width, height: 220,
    scales: {
      // whole days, one or many (from the data: uPlot widens a one-point range by itself)
      x: { time: true, range: (u) => [u.data[0][0] - 43200, u.data[0][u.data[0].length - 1] + 43200] },
      y: { range: (u, lo, hi) => [0, Math.max(hi * 1.15, 0.000001)] },
    },
    axes: [{}, { values: (u, ticks) => ticks.map((v) => "$" + money(v)), size: 70 }],
    series: [{}, { label: "batch $", stroke: "#2e9d5b", fill: "rgba(46,157,91,0.35)", paths: bars, points: { show: true } },
      { label: "real time $", stroke: "#2f6fde", fill: "rgba(47,111,222,0.12)", paths: bars, points: { show: true } }],
  }, data, box);
}

async function refresh() {
  try {
    const o = await getJSON("/api/overview");
    banner(o.figures.error ? "store: " + o.figures.error + " (figures from " + when(o.figures.at) + ")" : "");
    document.getElementById("store").textContent = o.store;
    document.getElementById("updated").textContent = "updated " + when(o.now);
    drawProgress(o); drawGrid(o); drawBatches(o); drawBudgets(o); drawFailures(o);
    await drawCosts();
    if (openBatch) await drawTimeline();
    document.body.dataset.loaded = String(o.now);
  } catch (e) {
    banner("cannot read the store: " + e.message);
  }
}

async function find(ev) {
  ev.preventDefault();
  const id = document.getElementById("custom-id").value;
  const bodies = document.getElementById("bodies").checked ? "1" : "0";
  const out = document.getElementById("found");
  try {
    const r = await getJSON("/api/request?custom_id=" + encodeURIComponent(id) + "&bodies=" + bodies);
    const items = [];
    if (!r.found.length) items.push(el("p", "No request with custom_id " + JSON.stringify(id) + ".", "muted"));
    for (const q of r.found) {
      items.push(el("h3", q.queue + " / " + q.custom_id + ": " + q.state));
      items.push(el("p", q.provider + " " + q.endpoint + " " + q.model + ", enqueued " + when(q.created_at) +
        ", " + fmtInt(q.attempts.length) + " attempts" + (q.reason ? ", " + q.reason : "")));
      const t = el("table");
      t.append(row([el("th", "attempt"), el("th", "batch"), el("th", "state"), el("th", "outcome"), el("th", "error")]));
      for (const a of q.attempts) {
        t.append(row([String(a.id), a.provider_batch_id || String(a.batch_id || "-"), a.state, a.outcome || "-",
          el("td", (a.error_code || "") + (a.error_message ? ": " + a.error_message : ""), "wrap")]));
      }
      items.push(t);
      if (q.result) {
        items.push(el("p", "result: status " + (q.result.status_code ?? "-") + ", " + fmtInt(q.result.input_tokens) +
          " input and " + fmtInt(q.result.output_tokens) + " output tokens" +
          (q.result.error_code ? ", " + q.result.error_code + ": " + q.result.error_message : "")));
      }
      if (q.body !== undefined) items.push(el("h3", "request body"), el("pre", q.body));
      if (q.result && q.result.body !== undefined) items.push(el("h3", "response body"), el("pre", q.result.body || ""));
    }
    out.replaceChildren(...items);
  } catch (e) {
    out.replaceChildren(el("p", "cannot search: " + e.message, "bad"));
  }
}

document.getElementById("find").addEventListener("submit", find);
refresh();
setInterval(refresh, REFRESH_MS);
