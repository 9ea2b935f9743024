/* peerwatt dashboard: charts (vendored Chart.js), overview refresh, receipt verification.
   No inline scripts (the Content-Security-Policy forbids them); data comes from JSON blocks
   (<script type="application/json">) and from the /api/v1 endpoints. Formatting mirrors
   dashboard/units.py: integers in, strings out. */
(function () {
  "use strict";
  const tz = document.body.dataset.timezone || "UTC";
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const MINUS = "\u2212";

  function fixed(value, scale, decimals) {
    // value / scale with `decimals` digits, half-even, on integers (values stay below 2^53).
    const step = scale / Math.pow(10, decimals);
    const abs = Math.abs(value);
    let q = Math.floor(abs / step);
    const r = abs - q * step;
    if (2 * r > step || (2 * r === step && q % 2 === 1)) q += 1;
    const p = Math.pow(10, decimals);
    const whole = Math.floor(q / p).toLocaleString("en-US");
    const frac = decimals ? "." + String(q % p).padStart(decimals, "0") : "";
    return (value < 0 && q ? MINUS : "") + whole + frac;
  }
  const fmt = {
    energy: (wh) => Math.abs(wh) < 1000 ? (wh < 0 ? MINUS : "") + Math.abs(wh) + " Wh"
      : fixed(wh, 1000, Math.abs(wh) < 100000 ? 2 : 1) + " kWh",
    money: (m) => (m < 0 && fixed(Math.abs(m), 1e6, 2).replace(/[0.,]/g, "") ? MINUS : "") + "\u20ac" + fixed(Math.abs(m), 1e6, 2),
    permille: (p) => p === null || p === undefined ? "\u2013" : fixed(p, 10, 1) + " %",
    age: (s) => {
      s = Math.max(0, s);
      if (s < 120) return s + " s";
      const min = Math.floor(s / 60);
      if (min < 120) return min + " min";
      const h = Math.floor(min / 60);
      return h < 48 ? h + " h " + (min % 60) + " min" : Math.floor(h / 24) + " d";
    },
  };
  const timeLabel = new Intl.DateTimeFormat("en-GB", { timeZone: tz, weekday: "short", hour: "2-digit", minute: "2-digit" });

  function readJSON(id) {
    const el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  /* -- overview ---------------------------------------------------------------------------- */
  let priceChart = null;
  function priceData(data) {
    const p = data.prices;
    return {
      labels: p.intervals.map((t) => timeLabel.format(new Date(t * 1000))),
      prices: p.price_per_kwh.map((v) => (v === null ? null : v / 10000)),  // ct/kWh, display only
      volumes: p.volume_wh.map((v) => (v === null ? null : v / 1000)),      // kWh; null: withheld
    };
  }
  function drawPriceChart(data) {
    const canvas = document.getElementById("price-chart");
    if (!canvas || !window.Chart) return;
    const d = priceData(data);
    if (priceChart) {
      priceChart.data.labels = d.labels;
      priceChart.data.datasets[0].data = d.prices;
      priceChart.data.datasets[1].data = d.volumes;
      priceChart.update("none");
      return;
    }
    Chart.defaults.color = css("--muted");
    Chart.defaults.borderColor = css("--line");
    priceChart = new Chart(canvas, {
      data: {
        labels: d.labels,
        datasets: [
          { type: "line", label: "Clearing price (ct/kWh)", data: d.prices, yAxisID: "price",
            borderColor: css("--sun"), backgroundColor: css("--sun"), pointRadius: 0, borderWidth: 2, spanGaps: false },
          { type: "bar", label: "Traded (kWh)", data: d.volumes, yAxisID: "volume",
            backgroundColor: css("--neighbours"), borderWidth: 0 },
        ],
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { ticks: { maxTicksLimit: 8, autoSkip: true } },
          price: { position: "left", title: { display: true, text: "ct/kWh" } },
          volume: { position: "right", title: { display: true, text: "kWh" }, grid: { drawOnChartArea: false } },
        },
      },
    });
  }
  function fillFields(data) {
    document.querySelectorAll("[data-field]").forEach((el) => {
      const value = el.dataset.field.split(".").reduce((o, k) => (o ? o[k] : undefined), data);
      if (value === undefined) return;
      const f = fmt[el.dataset.format];
      el.textContent = f ? f(value) : String(value);
    });
    document.querySelectorAll("[data-show-if]").forEach((el) => {  // shown while the field is not 0
      const value = el.dataset.showIf.split(".").reduce((o, k) => (o ? o[k] : undefined), data);
      if (value !== undefined) el.hidden = !value;
    });
  }
  function startOverview() {
    const data = readJSON("overview-data");
    if (!data) return;
    drawPriceChart(data);
    setInterval(async () => {
      try {
        const response = await fetch("/api/v1/overview", { headers: { Accept: "application/json" } });
        if (!response.ok) return;
        const fresh = await response.json();
        fillFields(fresh);
        drawPriceChart(fresh);
      } catch (e) { /* offline for a moment: keep the last figures */ }
    }, 15000);
  }

  /* -- household history ------------------------------------------------------------------- */
  function drawHistory() {
    const canvas = document.getElementById("history-chart");
    const data = readJSON("history-data");
    if (!canvas || !data || !window.Chart) return;
    const h = data.history;
    const kwh = (a) => a.map((v) => v / 1000);  // display only
    const fromGrid = h.import_wh.map((v, i) => Math.max(0, v - h.bought_wh[i]));
    const toGrid = h.export_wh.map((v, i) => -Math.max(0, v - h.sold_wh[i]));
    Chart.defaults.color = css("--muted");
    Chart.defaults.borderColor = css("--line");
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: h.labels,
        datasets: [
          { label: "From the grid (as settled so far)", data: kwh(fromGrid), backgroundColor: css("--grid"), stack: "e" },
          { label: "From neighbours, settled", data: kwh(h.bought_wh), backgroundColor: css("--home"), stack: "e" },
          { label: "To neighbours, settled", data: kwh(h.sold_wh.map((v) => -v)), backgroundColor: css("--neighbours"), stack: "e" },
          { label: "To the grid (as settled so far)", data: kwh(toGrid), backgroundColor: css("--sun"), stack: "e" },
          { label: "Bought, cleared, not yet settled", data: kwh(h.bought_pending_wh), backgroundColor: css("--home"),
            borderColor: css("--home"), borderWidth: 1, stack: "p" },
          { label: "Sold, cleared, not yet settled", data: kwh(h.sold_pending_wh.map((v) => -v)),
            backgroundColor: css("--line"), borderColor: css("--neighbours"), borderWidth: 1, stack: "p" },
        ],
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        scales: { x: { stacked: true, ticks: { maxTicksLimit: 12 } },
                  y: { stacked: true, title: { display: true, text: "kWh (imports up, exports down)" } } },
      },
    });
  }

  /* -- receipt verification ---------------------------------------------------------------- */
  function startReceipt() {
    const button = document.getElementById("verify-receipt");
    if (!button) return;
    const out = document.getElementById("verify-result");
    button.addEventListener("click", async () => {
      button.disabled = true;
      out.textContent = "Checking…";
      try {
        const token = document.querySelector('meta[name="csrf-token"]').content;
        const response = await fetch(button.dataset.url, { method: "POST", headers: { "X-CSRFToken": token } });
        const result = await response.json();
        out.textContent = "";
        const head = document.createElement("p");
        head.id = "verify-verdict";
        head.className = result.ok ? "ok" : "bad";
        head.textContent = result.ok ? "\u2714 Verified: this trade is in sealed blocks of the ledger."
          : "\u2718 Verification failed: " + (result.error || "see the checks below");
        out.appendChild(head);
        const groups = [{ label: "receipt", checks: result.checks || [] }].concat(
          (result.entries || []).map((entry) => ({ label: entry.what + " (block " + entry.height + ")", checks: entry.checks })));
        groups.forEach((group) => {
          if (!group.checks.length) return;
          const list = document.createElement("ul");
          list.className = "checks";
          group.checks.forEach((c) => {
            const li = document.createElement("li");
            li.className = c.ok ? "ok" : "bad";
            li.textContent = (c.ok ? "\u2714 " : "\u2718 ") + group.label + ": " + c.check + " \u2014 " + c.detail;
            list.appendChild(li);
          });
          out.appendChild(list);
        });
      } catch (e) {
        out.textContent = "Could not reach the dashboard: " + e;
      } finally {
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    startOverview();
    drawHistory();
    startReceipt();
  });
})();
