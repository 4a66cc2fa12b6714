// The chat page: conversations kept in this browser, answers streamed from /v1/chat/completions and
// rendered as Markdown, reasoning folded, tool calls shown, a stop button that ends the request (the
// server stops generating when the stream is closed), regenerate, and each answer's tokens and speed.
"use strict";

const Chat = (() => {
  const STORE = "llm-server.conversations";
  const $ = (id) => document.getElementById(id);
  let conversations = JSON.parse(localStorage.getItem(STORE) || "[]");
  let current = null;
  let running = null;  // the AbortController of the answer being streamed

  const save = () => localStorage.setItem(STORE, JSON.stringify(conversations));

  function newConversation() {
    current = {id: Date.now().toString(36), title: "New chat", messages: []};
    conversations.unshift(current);
    save();
    drawList();
    drawMessages();
  }

  function drawList() {
    const list = $("conversation-list");
    list.innerHTML = "";
    for (const conv of conversations) {
      const li = document.createElement("li");
      li.className = conv === current ? "current" : "";
      const title = document.createElement("span");
      title.textContent = conv.title;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.title = "Delete";
      remove.onclick = (e) => {
        e.stopPropagation();
        conversations = conversations.filter((c) => c !== conv);
        if (current === conv) current = conversations[0] || null;
        save();
        if (!current) newConversation(); else { drawList(); drawMessages(); }
      };
      li.append(title, remove);
      li.onclick = () => { current = conv; drawList(); drawMessages(); };
      list.append(li);
    }
  }

  function messageElement(message) {
    const div = document.createElement("div");
    div.className = "message " + message.role;
    const role = document.createElement("div");
    role.className = "role";
    role.textContent = message.role === "user" ? "You" : (message.model || "assistant");
    div.append(role);
    if (message.reasoning) {
      const details = document.createElement("details");
      details.className = "reasoning";
      details.innerHTML = "<summary>Reasoning</summary>" + Markdown.render(message.reasoning);
      div.append(details);
    }
    const body = document.createElement("div");
    body.className = "content";
    body.innerHTML = message.role === "user" ? "<p>" + Markdown.escape(message.content).replace(/\n/g, "<br>") + "</p>"
                                             : Markdown.render(message.content || "");
    div.append(body);
    for (const call of message.tool_calls || []) {
      const block = document.createElement("div");
      block.className = "tool-call";
      block.textContent = "call " + call.name + "(" + call.arguments + ")";
      div.append(block);
    }
    if (message.error) {
      const error = document.createElement("div");
      error.className = "error";
      error.textContent = message.error;
      div.append(error);
    }
    if (message.stats) {
      const stats = document.createElement("div");
      stats.className = "stats";
      stats.textContent = message.stats;
      div.append(stats);
    }
    return div;
  }

  function drawMessages() {
    const box = $("messages");
    box.innerHTML = "";
    for (const message of (current ? current.messages : [])) box.append(messageElement(message));
    box.scrollTop = box.scrollHeight;
  }

  function request(messages) {
    const system = $("system").value.trim();
    const wire = (system ? [{role: "system", content: system}] : []).concat(
      messages.map((m) => ({role: m.role, content: m.content || ""})));
    const body = {model: $("model").value, messages: wire, stream: true, stream_options: {include_usage: true}};
    for (const [id, key] of [["temperature", "temperature"], ["top-p", "top_p"], ["max-tokens", "max_tokens"]]) {
      const value = $(id).value;
      if (value !== "") body[key] = Number(value);
    }
    return body;
  }

  async function answer() {
    const conv = current;
    const reply = {role: "assistant", content: "", model: $("model").value};
    conv.messages.push(reply);
    let shown = messageElement(reply);
    $("messages").append(shown);
    running = new AbortController();
    setRunning(true);
    const started = performance.now();
    let first = null, last = null, usage = null;
    const calls = [];
    try {
      await Api.events("/v1/chat/completions", (name, data) => {
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (!delta) return;
        if (delta.content || delta.reasoning_content || delta.tool_calls) { last = performance.now(); first = first || last; }
        if (delta.content) reply.content += delta.content;
        if (delta.reasoning_content) reply.reasoning = (reply.reasoning || "") + delta.reasoning_content;
        for (const piece of delta.tool_calls || []) {
          const call = calls[piece.index] = calls[piece.index] || {name: "", arguments: ""};
          if (piece.function && piece.function.name) call.name = piece.function.name;
          if (piece.function && piece.function.arguments) call.arguments += piece.function.arguments;
          reply.tool_calls = calls.filter(Boolean);
        }
        const next = messageElement(reply);
        shown.replaceWith(next);
        shown = next;
        const box = $("messages");
        box.scrollTop = box.scrollHeight;
      }, running.signal, {method: "POST", body: JSON.stringify(request(conv.messages.slice(0, -1)))});
    } catch (error) {
      if (error.name === "AbortError") reply.stats = "stopped";
      else reply.error = String(error.message || error);
    } finally {
      running = null;
      setRunning(false);
    }
    if (usage) {
      const seconds = first && last > first ? (last - first) / 1000 : 0;
      const speed = seconds ? ((usage.completion_tokens - 1) / seconds).toFixed(1) + " tokens/s" : "";
      const ttft = first ? ((first - started) / 1000).toFixed(2) + " s to first token" : "";
      reply.stats = [usage.prompt_tokens + " prompt tokens", usage.completion_tokens + " generated", speed, ttft]
        .filter(Boolean).join(" · ");
    }
    if (conv.title === "New chat" && conv.messages[0]) conv.title = conv.messages[0].content.slice(0, 40);
    save();
    drawList();
    if (conv === current) drawMessages();
  }

  function setRunning(on) {
    $("send").disabled = on;
    $("regenerate").disabled = on;
    $("stop").disabled = !on;
    document.body.dataset.streaming = on ? "yes" : "no";
  }

  function send(event) {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || running) return;
    current.messages.push({role: "user", content: text});
    $("prompt").value = "";
    save();
    drawMessages();
    answer();
  }

  function regenerate() {
    if (running || !current.messages.length) return;
    if (current.messages[current.messages.length - 1].role === "assistant") current.messages.pop();
    drawMessages();
    if (current.messages.length) answer();
  }

  async function loadModels() {
    const select = $("model");
    const chosen = select.value || localStorage.getItem("llm-server.model");
    try {
      const [models, pool] = await Promise.all([Api.json("/v1/models"), Api.json("/admin/pool")]);
      const loaded = new Set(pool.models.filter((m) => m.loaded).map((m) => m.id));
      select.innerHTML = "";
      for (const model of models.data.filter((m) => m.kind !== "embedding")) {
        const option = document.createElement("option");
        option.value = model.id;
        option.textContent = model.id + (loaded.has(model.id) ? " ● loaded" : "");
        select.append(option);
      }
      if (chosen && [...select.options].some((o) => o.value === chosen)) select.value = chosen;
    } catch (error) {
      console.warn("models:", error.message);
    }
  }

  function start() {
    current = conversations[0] || null;
    if (!current) newConversation(); else { drawList(); drawMessages(); }
    $("composer").addEventListener("submit", send);
    $("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) send(e); });
    $("stop").addEventListener("click", () => running && running.abort());
    $("regenerate").addEventListener("click", regenerate);
    $("new-chat").addEventListener("click", newConversation);
    $("model").addEventListener("change", () => localStorage.setItem("llm-server.model", $("model").value));
    setRunning(false);
    loadModels();
  }

  return {start, loadModels};
})();
