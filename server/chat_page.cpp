// The chat page `GET /` serves: plain HTML, CSS and JavaScript in one string, no build step, no
// packages, nothing fetched from elsewhere (it works offline). It talks to the same endpoints
// as any client: /v1/models for the header, /v1/chat/completions with "stream": true for the
// reply (a stop button aborts the fetch, which frees the slot), /metrics for per-device memory
// and tokens/s after each reply. The conversation lives in the page.
#include "server/chat_page.h"

namespace chorus::server {

const char* chat_page() {
  return R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>chorus</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; display: flex; flex-direction: column; height: 100vh; }
header { background: #223; color: #eee; padding: 8px 12px; font-size: 14px; }
#settings { display: flex; gap: 8px; padding: 8px 12px; border-bottom: 1px solid #ccc; flex-wrap: wrap; }
#settings input { font: inherit; }
#log { flex: 1; overflow-y: auto; padding: 12px; }
.msg { margin: 6px 0; padding: 8px 10px; border-radius: 6px; white-space: pre-wrap; max-width: 80ch; }
.user { background: #e6eefc; margin-left: auto; }
.assistant { background: #f1f1f1; }
.error { background: #fde; }
#stats { font-size: 12px; color: #555; padding: 0 12px; min-height: 1.2em; }
form { display: flex; gap: 8px; padding: 8px 12px; border-top: 1px solid #ccc; }
#input { flex: 1; font: inherit; padding: 6px; }
</style>
</head>
<body>
<header id="model">chorus</header>
<div id="settings">
  <label>System prompt <input id="system" size="40"></label>
  <label>Temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7" style="width:5em"></label>
  <label>Max tokens <input id="max_tokens" type="number" min="1" value="512" style="width:6em"></label>
  <label>API key <input id="key" type="password" size="12"></label>
  <button id="clear" type="button">Clear</button>
</div>
<div id="log"></div>
<div id="stats"></div>
<form id="form">
  <input id="input" autocomplete="off" placeholder="Message">
  <button id="send" type="submit">Send</button>
  <button id="stop" type="button" disabled>Stop</button>
</form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let messages = [];
let controller = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

async function describeModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const m = (await r.json()).data[0];
    $("model").textContent = "chorus: " + m.id + " on " + m.meta.devices.join(", ") + " (" + m.meta.n_slots + " slots of " + m.meta.n_ctx_slot + " tokens)";
  } catch (e) {
    $("model").textContent = "chorus (model unavailable: " + e + ")";
  }
}

async function showMetrics(tokens, seconds) {
  let text = (seconds > 0 ? (tokens / seconds).toFixed(1) : "0") + " tokens/s";
  try {
    const body = await (await fetch("/metrics", { headers: headers() })).text();
    const memory = {};
    for (const line of body.split("\n")) {
      const m = line.match(/^chorus_device_memory_bytes\{device="(\d+)",name="([^"]*)",kind="(\w+)"\} (\S+)/);
      if (m) memory[m[2]] = (memory[m[2]] || 0) + Number(m[4]);
    }
    for (const [name, bytes] of Object.entries(memory)) text += " | " + name + ": " + (bytes / 1048576).toFixed(1) + " MiB";
  } catch (e) { /* metrics are optional */ }
  $("stats").textContent = text;
}

async function send(text) {
  messages.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant", "");
  const request = [];
  if ($("system").value) request.push({ role: "system", content: $("system").value });
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const t0 = performance.now();
  let reply = "", tokens = 0;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({ messages: request.concat(messages), stream: true,
                             temperature: Number($("temperature").value),
                             max_tokens: Number($("max_tokens").value) })
    });
    if (!r.ok) throw new Error((await r.json()).error.message);
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (!block.startsWith("data: ") || block === "data: [DONE]") continue;
        const chunk = JSON.parse(block.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        const delta = chunk.choices[0].delta.content || "";
        reply += delta;
        out.textContent = reply;
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") { out.className = "msg error"; out.textContent = reply + "\n[" + e.message + "]"; }
  }
  messages.push({ role: "assistant", content: reply });
  controller = null;
  $("send").disabled = false;
  $("stop").disabled = true;
  await showMetrics(tokens, (performance.now() - t0) / 1000);
}

$("form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("clear").addEventListener("click", () => { messages = []; $("log").textContent = ""; $("stats").textContent = ""; });
$("key").addEventListener("change", describeModel);
describeModel();
</script>
</body>
</html>
)HTML";
}

}  // namespace chorus::server
