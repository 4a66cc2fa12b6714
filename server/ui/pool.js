// The pool page: every alias with its state, process, memory, slots busy, queue and throughput, pushed by
// the server (GET /admin/pool/sse: on every change and every 2 s), load and unload buttons, and the
// server's recent log lines.
"use strict";

const Pool = (() => {
  const $ = (id) => document.getElementById(id);
  let previous = null;  // the last snapshot, for requests/s and tokens/s
  let stream = null;

  const mib = (bytes) => bytes ? (bytes / 1048576).toFixed(0) + " MiB" : "";

  function state(row) {
    if (row.cool_down_seconds > 0) return "cooling down";
    if (!row.loaded && !row.loading && row.exit_code !== null && row.exit_code !== undefined) return "crashed";
    return row.state;
  }

  function rate(row, key, seconds) {
    const before = previous && previous.rows[row.id];
    if (!before || seconds <= 0) return "";
    return ((row[key] - before[key]) / seconds).toFixed(1);
  }

  function draw(snapshot) {
    const now = snapshot.time;
    const seconds = previous ? now - previous.time : 0;
    const body = $("pool-table").querySelector("tbody");
    body.innerHTML = "";
    for (const row of snapshot.models) {
      const tr = document.createElement("tr");
      tr.dataset.model = row.id;
      const shown = state(row);
      const cells = [row.id, shown, row.pid || "", mib(row.rss_bytes), row.running, row.waiting,
                     rate(row, "requests_total", seconds), rate(row, "tokens_total", seconds)];
      cells.forEach((value, i) => {
        const td = document.createElement("td");
        td.textContent = value;
        if (i === 1) td.className = "state-" + shown.split(" ")[0];
        tr.append(td);
      });
      const actions = document.createElement("td");
      const button = document.createElement("button");
      button.type = "button";
      const loaded = row.loaded || row.loading;
      button.textContent = loaded ? "Unload" : "Load";
      button.className = loaded ? "unload" : "load";
      button.onclick = async () => {
        button.disabled = true;
        try { await Api.json(loaded ? "/models/unload" : "/models/load", {model: row.id}); }
        catch (error) { alert(row.id + ": " + error.message); }
        finally { button.disabled = false; }
      };
      actions.append(button);
      tr.append(actions);
      body.append(tr);
    }
    const resident = snapshot.models.filter((m) => m.loaded).length;
    $("pool-summary").textContent = resident + " of at most " + snapshot.max_resident + " models resident" +
      (snapshot.memory_budget ? ", memory budget " + mib(snapshot.memory_budget) : "");
    previous = {time: now, rows: Object.fromEntries(snapshot.models.map((m) => [m.id, m]))};
  }

  function log(lines) {
    const box = $("log");
    const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.textContent = (box.textContent + lines.join("\n") + "\n").split("\n").slice(-400).join("\n");
    if (atEnd) box.scrollTop = box.scrollHeight;
  }

  async function start() {
    if (stream) return;
    stream = new AbortController();
    try {
      await Api.events("/admin/pool/sse", (name, data) => {
        const payload = JSON.parse(data);
        if (name === "pool") draw(payload);
        else if (name === "log") log(payload.lines);
      }, stream.signal);
    } catch (error) {
      if (error.name !== "AbortError") $("pool-summary").textContent = "Pool events stopped: " + error.message;
    }
    stream = null;
  }

  function stop() { if (stream) stream.abort(); stream = null; }

  return {start, stop};
})();

function showPage() {
  const page = location.hash === "#pool" ? "pool" : "chat";
  for (const name of ["chat", "pool"]) {
    document.getElementById(name).hidden = name !== page;
    document.getElementById("tab-" + name).classList.toggle("active", name === page);
  }
  if (page === "pool") Pool.start(); else { Pool.stop(); Chat.loadModels(); }
}

window.addEventListener("hashchange", showPage);
Chat.start();
showPage();
