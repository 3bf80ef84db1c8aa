#!/usr/bin/env python3
"""A bounded load test of a running `chorus serve` on loopback (standard library only).

usage: bench-serve.py PORT [--clients 8] [--requests 20] [--max-tokens 32] [--api-key KEY]
       bench-serve.py [--clients ...] --serve CHORUS MODEL [SERVE FLAGS...]   (starts and stops
       `chorus serve --port 0 -np CLIENTS` itself; ctest's serve_load runs it so)

Each of --clients threads sends --requests streaming completions (greedy, ignore_eos, each
prompt one of a few fixed ones). Every response must be complete and well formed (chunks, a
final chunk with usage, data: [DONE]) and its text identical to the same prompt's reply when
it runs alone (measured first, one request at a time). Prints the aggregate generated tokens/s
and the p50 / p99 time to first token; timings are printed, never asserted. Exits 1 on any
malformed or differing response.
"""
import argparse
import http.client
import json
import signal
import statistics
import subprocess
import sys
import threading
import time

PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben went", "One day, a bird", "Tom had a red ball"]


def stream(port, key, prompt, max_tokens):
    """Returns (text, completion_tokens, seconds to the first token, seconds in all)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True})
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError("status %d: %s" % (resp.status, resp.read()[:200]))
    text, first, usage, done = "", None, None, False
    for raw in resp:
        line = raw.decode().rstrip("\n")
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            break
        chunk = json.loads(data)
        piece = chunk["choices"][0]["text"]
        if piece and first is None:
            first = time.perf_counter() - t0
        text += piece
        usage = chunk.get("usage", usage)
    conn.close()
    if not done or usage is None:
        raise RuntimeError("stream ended without usage and data: [DONE]")
    return text, usage["completion_tokens"], first or 0.0, time.perf_counter() - t0


def start_server(chorus, model, flags, clients):
    """Starts chorus serve on a free port; returns (process, port) once the model is loaded."""
    proc = subprocess.Popen([chorus, "serve", "-m", model, "--port", "0", "-np", str(clients)] + flags,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # the port, printed when the model is loaded
    if not line.strip().isdigit():
        proc.kill()
        sys.exit("chorus serve did not start:\n" + proc.stderr.read())
    return proc, int(line)


def main():
    # Everything after --serve is the server's: CHORUS MODEL [FLAGS...].
    argv = sys.argv[1:]
    serve = argv[argv.index("--serve") + 1:] if "--serve" in argv else None
    if serve is not None:
        argv = argv[:argv.index("--serve")]
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int, nargs="?")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--api-key", default="")
    a = ap.parse_args(argv)
    a.serve = serve
    if (a.port is None) == (serve is None or len(serve) < 2):
        ap.error("give a PORT, or --serve CHORUS MODEL [FLAGS...] last")
    if a.serve:
        proc, a.port = start_server(a.serve[0], a.serve[1], a.serve[2:], a.clients)
        try:
            status = run(a)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
        if proc.returncode != 0:
            print("chorus serve exited with %d:\n%s" % (proc.returncode, proc.stderr.read()), file=sys.stderr)
            status = 1
        sys.exit(status)
    sys.exit(run(a))


def run(a):

    alone, single_tokens, single_time = {}, 0, 0.0
    for p in PROMPTS:
        text, n, _, seconds = stream(a.port, a.api_key, p, a.max_tokens)
        alone[p] = text
        single_tokens += n
        single_time += seconds
    print("one client:   %6.1f tokens/s (%d requests one after another)" % (single_tokens / single_time, len(PROMPTS)))

    ttft, errors, tokens = [], [], [0]
    lock = threading.Lock()

    def client(i):
        for r in range(a.requests):
            p = PROMPTS[(i + r) % len(PROMPTS)]
            try:
                text, n, first, _ = stream(a.port, a.api_key, p, a.max_tokens)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                with lock:
                    errors.append("client %d request %d: %s" % (i, r, e))
                continue
            with lock:
                ttft.append(first)
                tokens[0] += n
                if text != alone[p]:
                    errors.append("client %d request %d (%r): %r differs from the reply alone %r" % (i, r, p, text, alone[p]))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    ttft.sort()
    p99 = ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))] if ttft else 0.0
    print("%d clients:   %6.1f tokens/s aggregate (%d requests x %d tokens in %.1f s)" %
          (a.clients, tokens[0] / elapsed, a.clients * a.requests, a.max_tokens, elapsed))
    print("time to first token: p50 %.0f ms, p99 %.0f ms" % (1000 * statistics.median(ttft) if ttft else 0, 1000 * p99))
    for e in errors[:10]:
        print("ERROR: " + e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    main()
