// The chat page's script (GET / of `chorus serve`) run by Node against a live server, with a
// minimal stand-in for the few DOM calls it makes: it must describe the model, stream a reply
// to one message and show tokens/s and memory afterwards. Prints one JSON line:
// {"header": ..., "reply": ..., "stats": ..., "bubbles": [...]}.
// usage: node chat_page_test.js PORT API_KEY MESSAGE
"use strict";

const [port, key, message] = process.argv.slice(2);
const base = "http://127.0.0.1:" + port;

function element(id) {
  const el = {
    id, value: "", textContent: "", className: "", disabled: false, scrollTop: 0, scrollHeight: 0,
    children: [], handlers: {},
    appendChild(child) { this.children.push(child); return child; },
    addEventListener(type, fn) { this.handlers[type] = fn; },
  };
  return el;
}

async function main() {
  const page = await (await fetch(base + "/")).text();
  const script = page.slice(page.indexOf("<script>") + 8, page.indexOf("</script>"));
  const elements = {};
  globalThis.document = {
    getElementById: (id) => (elements[id] = elements[id] || element(id)),
    createElement: () => element(""),
  };
  // Relative URLs, as in a browser at the server's address.
  const realFetch = globalThis.fetch;
  globalThis.fetch = (url, options) => realFetch(base + url, options);
  document.getElementById("key").value = key;
  document.getElementById("temperature").value = "0";
  document.getElementById("max_tokens").value = "24";
  const page_api = new Function(script + "\nreturn { send, describeModel };")();
  await page_api.describeModel();
  await page_api.send(message);
  const log = elements["log"].children;
  console.log(JSON.stringify({
    header: elements["model"].textContent,
    reply: log[log.length - 1].textContent,
    replyClass: log[log.length - 1].className,
    stats: elements["stats"].textContent,
    bubbles: log.map((b) => b.className),
  }));
}

main().then(() => process.exit(0), (e) => { console.error("chat page failed: " + (e.stack || e)); process.exit(1); });
