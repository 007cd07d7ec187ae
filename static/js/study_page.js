// The study page, live: polls the study's JSON (every second, backing off while nothing
// changes), then reads its summary (one row per case) for a sortable table of cases, a
// scatter plot of any statistic against any parameter and, with more than two parameters,
// a parallel-coordinates plot. The page is complete without this script (counts as of
// loading, downloads); it only keeps it current and adds the table and plots.
(function () {
  "use strict";

  const configElement = document.getElementById("study-config");
  if (!configElement) return;
  const config = JSON.parse(configElement.textContent);
  const finished = new Set(config.finished_statuses);
  const parameters = config.parameters;

  const POLL_MS = 1000;
  const POLL_MAX_MS = 8000;
  const SUMMARY_EVERY_MS = 5000; // while running: the table and plots refresh this often
  const SHOWN_ROWS = 500;
  const FIXED = new Set(["index", "status", "error_code", ...parameters]);

  const byId = (id) => document.getElementById(id);
  const elements = {
    status: byId("study-status"),
    progress: byId("study-progress"),
    progressText: byId("study-progress-text"),
    started: byId("study-started"),
    finished: byId("study-finished"),
    cpu: byId("study-cpu"),
    charge: byId("study-charge"),
    cancelForm: byId("cancel-form"),
    refreshHint: byId("refresh-hint"),
    message: byId("results-message"),
    plots: byId("plots"),
    x: byId("plot-x"),
    y: byId("plot-y"),
    scatter: byId("scatter"),
    parcoordsFigure: byId("parcoords-figure"),
    parcoords: byId("parcoords"),
    table: byId("cases"),
    note: byId("cases-note"),
    failed: byId("failed-cases"),
    failedList: byId("failed-list"),
    failedNote: byId("failed-note"),
  };
  const FAILED_SHOWN = 100;

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const state = { rows: [], statistics: [], sortKey: "index", sortDescending: false, fingerprint: "" };

  // --- following the study -----------------------------------------------------------------

  function formatTime(iso) {
    return iso ? iso.replace("T", " ").slice(0, 19) : "—";
  }

  function render(study) {
    elements.status.textContent = config.status_labels[study.status] || study.status;
    elements.status.className = "status status-" + study.status;
    const progress = Math.max(0, Math.min(1, study.progress || 0));
    elements.progress.value = progress;
    elements.progress.textContent = Math.floor(progress * 100) + " %";
    elements.progressText.textContent = Math.floor(progress * 100) + " %";
    for (const [name, count] of Object.entries(study.cases)) {
      const element = byId("study-count-" + name);
      if (element) element.textContent = String(count);
    }
    elements.started.textContent = formatTime(study.started_at);
    elements.finished.textContent = formatTime(study.finished_at);
    elements.cpu.textContent = (study.cpu_seconds || 0).toFixed(3) + " s";
    elements.charge.textContent = (study.charge && study.charge.kind) || "—";
    if (finished.has(study.status)) {
      elements.cancelForm.hidden = true;
      if (elements.refreshHint) elements.refreshHint.hidden = true;
    }
  }

  async function getJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) {
      let detail = "";
      try {
        detail = (await response.json()).detail || "";
      } catch (error) {
        detail = "";
      }
      throw new Error(detail || "The server answered " + response.status + ".");
    }
    return response.json();
  }

  async function follow() {
    let interval = POLL_MS;
    let lastSeen = "";
    let lastSummary = 0;
    let summarised = "";
    for (;;) {
      let study;
      try {
        study = await getJson(config.status_url);
      } catch (error) {
        elements.message.textContent = "Could not refresh the study: " + error.message + " Retrying…";
        interval = Math.min(interval * 2, POLL_MAX_MS);
        await sleep(interval);
        continue;
      }
      render(study);
      const seen = JSON.stringify([study.status, study.cases]);
      const done = finished.has(study.status);
      const ended = study.cases.succeeded + study.cases.failed + study.cases.cancelled;
      if (ended > 0 && seen !== summarised && (done || Date.now() - lastSummary >= SUMMARY_EVERY_MS)) {
        lastSummary = Date.now();
        summarised = seen;
        await loadSummary(done);
        if (study.cases.failed > 0) await loadFailed(study.cases.failed);
      }
      if (done) return;
      // Poll fast while the study moves; back off while nothing changes.
      interval = seen === lastSeen ? Math.min(interval * 1.5, POLL_MAX_MS) : POLL_MS;
      lastSeen = seen;
      await sleep(interval);
    }
  }

  // --- the summary: table and plots --------------------------------------------------------

  async function loadSummary(done) {
    let rows;
    try {
      rows = await getJson(config.summary_url + "?format=json");
    } catch (error) {
      elements.message.textContent = "Could not load the results: " + error.message;
      return;
    }
    state.rows = rows;
    state.statistics = rows.length ? Object.keys(rows[0]).filter((name) => !FIXED.has(name)) : [];
    elements.message.textContent = done ? "" : "Showing the cases that have ended so far.";
    renderTable();
    renderPlots();
  }

  // The failed cases with their error's code and message (the summary has only the code).
  async function loadFailed(count) {
    let page;
    try {
      page = await getJson(config.cases_url + "?status=failed&limit=" + FAILED_SHOWN);
    } catch (error) {
      elements.failedNote.textContent = "Could not load the failed cases: " + error.message;
      elements.failed.hidden = false;
      return;
    }
    elements.failedList.replaceChildren(
      ...page.results.map((item) => {
        const line = document.createElement("li");
        const name = document.createElement("strong");
        name.textContent = "Case " + item.index;
        const code = document.createElement("code");
        code.textContent = item.error ? item.error.code : "";
        const values = Object.entries(item.parameters)
          .map(([key, value]) => key + " = " + formatValue(value))
          .join(", ");
        line.append(name, " (" + values + "): ", code, " — " + (item.error ? item.error.message : ""));
        return line;
      }),
    );
    elements.failedNote.textContent =
      count > page.results.length ? "The first " + page.results.length + " of " + count + " failed cases." : "";
    elements.failed.hidden = false;
  }

  function formatValue(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "number") return String(Number(value.toPrecision(10)));
    return String(value);
  }

  function compare(a, b) {
    const left = a[state.sortKey];
    const right = b[state.sortKey];
    if (left === right) return a.index - b.index;
    if (left === null || left === undefined || left === "") return 1; // empty last, either way
    if (right === null || right === undefined || right === "") return -1;
    const order = left < right ? -1 : 1;
    return state.sortDescending ? -order : order;
  }

  function sortBy(key) {
    if (state.sortKey === key) state.sortDescending = !state.sortDescending;
    else {
      state.sortKey = key;
      state.sortDescending = false;
    }
    renderTable();
  }

  function caseCsvUrl(index) {
    return config.status_url + "/cases/" + index + "/result?format=csv";
  }

  function renderTable() {
    const columns = ["index", "status", ...parameters, ...state.statistics, "error_code"];
    const head = document.createElement("tr");
    columns.forEach((name) => {
      const cell = document.createElement("th");
      cell.scope = "col";
      const sorted = state.sortKey === name;
      cell.setAttribute("aria-sort", sorted ? (state.sortDescending ? "descending" : "ascending") : "none");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link sort";
      button.textContent = name === "error_code" ? "error" : name;
      button.title = "Sort by " + name;
      if (sorted) button.textContent += state.sortDescending ? " ▼" : " ▲";
      button.addEventListener("click", () => sortBy(name));
      cell.append(button);
      head.append(cell);
    });
    const csvHead = document.createElement("th");
    csvHead.scope = "col";
    csvHead.textContent = "Trace";
    head.append(csvHead);
    elements.table.tHead.replaceChildren(head);

    const body = elements.table.tBodies[0];
    body.replaceChildren();
    const sorted = state.rows.slice().sort(compare);
    sorted.slice(0, SHOWN_ROWS).forEach((row) => {
      const line = document.createElement("tr");
      columns.forEach((name) => {
        const cell = document.createElement("td");
        cell.textContent = formatValue(row[name]);
        if (name === "status") cell.className = "status-cell status-" + row.status;
        line.append(cell);
      });
      const link = document.createElement("td");
      if (row.status === "succeeded") {
        const anchor = document.createElement("a");
        anchor.href = caseCsvUrl(row.index);
        anchor.textContent = "CSV";
        anchor.setAttribute("download", "");
        anchor.setAttribute("aria-label", "Download the trace of case " + row.index + " as CSV");
        link.append(anchor);
      }
      line.append(link);
      body.append(line);
    });
    elements.note.textContent =
      sorted.length > SHOWN_ROWS
        ? "The first " + SHOWN_ROWS + " of " + sorted.length + " cases in this order; download the summary for all."
        : sorted.length + (sorted.length === 1 ? " case." : " cases.");
  }

  function fillSelect(select, names, preferred) {
    const current = select.value;
    const fingerprint = names.join("\u0000");
    if (select.dataset.names !== fingerprint) {
      select.replaceChildren(...names.map((name) => new Option(name, name)));
      select.dataset.names = fingerprint;
    }
    select.value = names.includes(current) ? current : preferred;
  }

  function renderPlots() {
    if (!state.statistics.length || !parameters.length) return;
    if (typeof window.Plotly === "undefined") {
      elements.message.textContent = "The plotting library did not load; download the summary instead.";
      return;
    }
    elements.plots.hidden = false;
    fillSelect(elements.x, parameters, parameters[0]);
    fillSelect(elements.y, state.statistics, state.statistics[0]);
    drawScatter();
    drawParcoords();
  }

  function plotted() {
    return state.rows.filter((row) => typeof row[elements.y.value] === "number");
  }

  function drawScatter() {
    const x = elements.x.value;
    const y = elements.y.value;
    const rows = plotted();
    const trace = {
      x: rows.map((row) => row[x]),
      y: rows.map((row) => row[y]),
      text: rows.map((row) => "case " + row.index),
      type: rows.length > 5000 ? "scattergl" : "scatter",
      mode: "markers",
      marker: { size: 8, color: "#0b5cad" },
      hovertemplate: "%{text}<br>" + x + " = %{x}<br>" + y + " = %{y}<extra></extra>",
    };
    const layout = {
      margin: { t: 16, r: 16, b: 56, l: 72 },
      xaxis: { title: { text: x }, zeroline: false },
      yaxis: { title: { text: y }, zeroline: false },
      font: { family: "system-ui, sans-serif" },
    };
    window.Plotly.react(elements.scatter, [trace], layout, {
      responsive: true,
      displaylogo: false,
      toImageButtonOptions: { filename: "study-scatter" },
    });
  }

  function drawParcoords() {
    if (parameters.length <= 2) return;
    const y = elements.y.value;
    const rows = plotted();
    const dimension = (name) => ({ label: name, values: rows.map((row) => Number(row[name])) });
    elements.parcoordsFigure.hidden = false;
    window.Plotly.react(
      elements.parcoords,
      [
        {
          type: "parcoords",
          line: { color: rows.map((row) => row[y]), colorscale: "Viridis", showscale: true },
          dimensions: [...parameters.map(dimension), dimension(y)],
        },
      ],
      { margin: { t: 48, r: 48, b: 24, l: 48 }, font: { family: "system-ui, sans-serif" } },
      { responsive: true, displaylogo: false },
    );
  }

  elements.x.addEventListener("change", drawScatter);
  elements.y.addEventListener("change", () => {
    drawScatter();
    drawParcoords();
  });

  follow();
})();
