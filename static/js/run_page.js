// The run page, live: follows the run through the JSON API (long polls with ?wait=) and, once it
// has succeeded, plots the result with Plotly and previews its first rows. The page is complete
// without this script; it only keeps it current and adds the plot.
(function () {
  "use strict";

  const configElement = document.getElementById("run-config");
  if (!configElement) return;
  const config = JSON.parse(configElement.textContent);
  const finished = new Set(config.finished_statuses);

  const WAIT_SECONDS = 10;
  const PREVIEW_ROWS = 20;
  // Above this many values (rows x variables) the result is fetched a few variables at a time.
  const MAX_VALUES_PER_FETCH = 1000000;
  const INITIALLY_SHOWN = 6;
  const WEBGL_ABOVE_ROWS = 20000;

  const byId = (id) => document.getElementById(id);
  const elements = {
    status: byId("run-status"),
    progress: byId("run-progress"),
    progressText: byId("run-progress-text"),
    started: byId("run-started"),
    finished: byId("run-finished"),
    wall: byId("run-wall"),
    cpu: byId("run-cpu"),
    error: byId("run-error"),
    errorCode: byId("run-error-code"),
    errorMessage: byId("run-error-message"),
    log: byId("run-log"),
    logTail: byId("run-log-tail"),
    cancelForm: byId("cancel-form"),
    refreshHint: byId("refresh-hint"),
    result: byId("result"),
    resultRows: byId("result-rows"),
    plot: byId("plot"),
    plotMessage: byId("plot-message"),
    variables: byId("plot-variables"),
    variableList: byId("plot-variable-list"),
    preview: byId("preview"),
  };

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // --- following the run -------------------------------------------------------------------

  function formatTime(iso) {
    // The API's timestamps are in the server's zone, like the page's: show them the same way.
    return iso ? iso.replace("T", " ").slice(0, 19) : "—";
  }

  function formatSeconds(seconds) {
    return seconds === null || seconds === undefined ? "—" : seconds.toFixed(3) + " s";
  }

  function render(run) {
    elements.status.textContent = config.status_labels[run.status] || run.status;
    elements.status.className = "status status-" + run.status;
    const progress = Math.max(0, Math.min(1, run.progress || 0));
    elements.progress.value = progress;
    elements.progress.textContent = Math.round(progress * 100) + " %";
    elements.progressText.textContent = Math.round(progress * 100) + " %";
    elements.started.textContent = formatTime(run.started_at);
    elements.finished.textContent = formatTime(run.finished_at);
    elements.wall.textContent = formatSeconds(run.wall_seconds);
    elements.cpu.textContent = formatSeconds(run.cpu_seconds);
    if (run.error) {
      elements.errorCode.textContent = run.error.code;
      elements.errorMessage.textContent = run.error.message;
      elements.logTail.textContent = run.error.log_tail || "";
      elements.log.hidden = !run.error.log_tail;
      elements.error.hidden = false;
    }
    if (finished.has(run.status)) {
      elements.cancelForm.hidden = true;
      if (elements.refreshHint) elements.refreshHint.hidden = true;
    }
  }

  async function follow() {
    let backoff = 1000;
    for (;;) {
      let response;
      try {
        response = await fetch(config.status_url + "?wait=" + WAIT_SECONDS, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
      } catch (networkError) {
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 30000);
        continue;
      }
      if ([401, 403, 404].includes(response.status)) {
        if (elements.refreshHint) {
          elements.refreshHint.hidden = false;
          elements.refreshHint.textContent = "Live updates stopped; reload the page.";
        }
        return;
      }
      if (!response.ok) {
        const retryAfter = Number(response.headers.get("Retry-After"));
        await sleep(retryAfter > 0 ? retryAfter * 1000 : backoff);
        backoff = Math.min(backoff * 2, 30000);
        continue;
      }
      backoff = 1000;
      const run = await response.json();
      render(run);
      if (finished.has(run.status)) {
        if (run.status === "succeeded") showResult(run.result_rows);
        return;
      }
    }
  }

  // --- the result ----------------------------------------------------------------------------

  const result = { columns: [], units: {}, series: {}, rows: 0 };

  function resultUrl(variables) {
    let url = config.result_url + "?format=json";
    if (variables) url += "&variables=" + variables.map(encodeURIComponent).join(",");
    return url;
  }

  async function fetchColumns(variables) {
    const response = await fetch(resultUrl(variables), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      let detail = "";
      try {
        detail = (await response.json()).detail || "";
      } catch (parseError) {
        // Not problem+json: the status says enough.
      }
      const error = new Error(detail || "The result could not be loaded (HTTP " + response.status + ").");
      error.status = response.status;
      throw error;
    }
    const body = await response.json();
    Object.assign(result.units, body.units || {});
    body.columns.forEach((name, index) => {
      result.series[name] = body.data.map((row) => row[index]);
    });
    result.rows = body.data.length;
    return body.columns;
  }

  async function showResult(rows) {
    elements.result.hidden = false;
    if (typeof rows === "number") elements.resultRows.textContent = rows + " rows";
    if (typeof window.Plotly === "undefined") {
      elements.plotMessage.textContent = "The plotting library did not load; download the CSV instead.";
      return;
    }
    let columns = config.columns;
    const big = typeof rows === "number" && rows * (columns.length + 1) > MAX_VALUES_PER_FETCH;
    elements.plotMessage.textContent = "Loading the result…";
    const everything = async () => (await fetchColumns(null)).filter((name) => name !== "time");
    try {
      if (big && columns.length > INITIALLY_SHOWN) {
        try {
          await fetchColumns(columns.slice(0, INITIALLY_SHOWN));
        } catch (error) {
          // The expected names were not the result's (400): take the whole result instead.
          if (error.status !== 400) throw error;
          columns = await everything();
        }
      } else {
        columns = await everything();
      }
    } catch (error) {
      elements.plotMessage.textContent = error.message;
      return;
    }
    result.columns = columns;
    buildVariableChoices(columns);
    elements.plotMessage.textContent = big
      ? "Large result: variables are loaded when you select them."
      : "";
    draw();
  }

  function label(name) {
    const unit = result.units[name];
    return unit ? name + " [" + unit + "]" : name;
  }

  function buildVariableChoices(columns) {
    elements.variableList.replaceChildren();
    columns.forEach((name, index) => {
      const id = "plot-variable-" + index;
      const wrapper = document.createElement("div");
      wrapper.className = "check";
      const input = document.createElement("input");
      input.type = "checkbox";
      input.id = id;
      input.value = name;
      input.checked = index < INITIALLY_SHOWN && name in result.series;
      input.addEventListener("change", onVariableToggled);
      const text = document.createElement("label");
      text.htmlFor = id;
      text.textContent = label(name);
      wrapper.append(input, text);
      elements.variableList.append(wrapper);
    });
    elements.variables.hidden = columns.length === 0;
  }

  function selectedVariables() {
    return Array.from(elements.variableList.querySelectorAll("input:checked")).map((input) => input.value);
  }

  async function onVariableToggled(event) {
    const name = event.target.value;
    if (event.target.checked && !(name in result.series)) {
      elements.plotMessage.textContent = "Loading " + name + "…";
      try {
        await fetchColumns([name]);
        elements.plotMessage.textContent = "";
      } catch (error) {
        event.target.checked = false;
        elements.plotMessage.textContent = error.message;
        return;
      }
    }
    draw();
  }

  function draw() {
    const shown = selectedVariables();
    const time = result.series.time || [];
    const traceType = time.length > WEBGL_ABOVE_ROWS ? "scattergl" : "scatter";
    const traces = shown.map((name) => ({
      x: time,
      y: result.series[name],
      name: label(name),
      type: traceType,
      mode: "lines",
    }));
    const layout = {
      margin: { t: 16, r: 16, b: 48, l: 64 },
      xaxis: { title: { text: label("time") }, zeroline: false },
      yaxis: { zeroline: false },
      legend: { orientation: "h", y: -0.2 },
      showlegend: true,
      font: { family: "system-ui, sans-serif" },
    };
    window.Plotly.react(elements.plot, traces, layout, {
      responsive: true,
      displaylogo: false,
      toImageButtonOptions: { filename: "result" },
    });
    if (shown.length === 0) elements.plotMessage.textContent = "Select a variable to plot it.";
    renderPreview(shown);
  }

  // As the CSV download writes numbers: 15 significant digits, no binary noise.
  function formatValue(value) {
    if (value === null) return "";
    if (typeof value === "number") return String(Number(value.toPrecision(15)));
    return String(value);
  }

  function renderPreview(shown) {
    const names = ["time", ...shown];
    const head = document.createElement("tr");
    names.forEach((name) => {
      const cell = document.createElement("th");
      cell.scope = "col";
      cell.textContent = label(name);
      head.append(cell);
    });
    elements.preview.tHead.replaceChildren(head);
    const body = elements.preview.tBodies[0];
    body.replaceChildren();
    const count = Math.min(PREVIEW_ROWS, (result.series.time || []).length);
    for (let row = 0; row < count; row += 1) {
      const line = document.createElement("tr");
      names.forEach((name) => {
        const cell = document.createElement("td");
        cell.textContent = formatValue(result.series[name][row]);
        line.append(cell);
      });
      body.append(line);
    }
  }

  if (config.status === "succeeded") {
    showResult(config.result_rows);
  } else if (!finished.has(config.status)) {
    follow();
  }
})();
