// The server's API as the page uses it: the API key (asked for when the server wants one, kept in this
// browser), JSON calls, and server-sent events read with fetch (EventSource cannot send a key).
"use strict";

const Api = (() => {
  const KEY = "llm-server.api-key";
  let asking = null;

  function headers(extra) {
    const key = localStorage.getItem(KEY);
    return Object.assign({"Content-Type": "application/json"}, key ? {"Authorization": "Bearer " + key} : {}, extra || {});
  }

  function askForKey(reason) {
    if (asking) return asking;
    const dialog = document.getElementById("key-dialog");
    document.getElementById("key-reason").textContent = reason || "This server asks for an API key.";
    const input = document.getElementById("key-input");
    input.value = localStorage.getItem(KEY) || "";
    asking = new Promise((resolve) => {
      const done = (ok) => {
        dialog.close();
        asking = null;
        if (ok) localStorage.setItem(KEY, input.value.trim());
        resolve(ok);
      };
      document.getElementById("key-save").onclick = (e) => { e.preventDefault(); done(true); };
      document.getElementById("key-cancel").onclick = () => done(false);
      dialog.showModal();
      input.focus();
    });
    return asking;
  }

  // fetch with the key; a 401 asks for a key once and tries again.
  async function call(path, options) {
    options = options || {};
    for (let attempt = 0; attempt < 2; attempt++) {
      const response = await fetch(path, Object.assign({}, options, {headers: headers(options.headers)}));
      if (response.status !== 401 || attempt === 1) return response;
      if (!(await askForKey("This server asks for an API key (the last one was refused or missing)."))) return response;
    }
  }

  async function json(path, body) {
    const response = await call(path, body === undefined ? {} : {method: "POST", body: JSON.stringify(body)});
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error((data.error && (data.error.message || data.error)) || response.statusText);
    return data;
  }

  // Server-sent events over fetch: calls onEvent(name, data) for each event until the stream ends or
  // `signal` aborts it.
  async function events(path, onEvent, signal, init) {
    const response = await call(path, Object.assign({signal}, init || {}));
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      throw new Error((data.error && (data.error.message || data.error)) || response.statusText);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        if (data) onEvent(name, data);
      }
    }
  }

  function changeKey() { return askForKey("API key for this server (kept in this browser only)."); }

  return {call, json, events, changeKey};
})();

document.getElementById("key-button").addEventListener("click", () => Api.changeKey());
