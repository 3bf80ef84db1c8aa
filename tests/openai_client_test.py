#!/usr/bin/env python3
"""`chorus serve` driven by clients no one here wrote: the `openai` Python package (from PyPI,
installed into a virtual environment on first use) and curl.

usage: openai_client_test.py CHORUS_BINARY MODEL.gguf VENV_DIR

Starts `chorus serve --port 0` (it prints the port on stdout once the model is loaded), then:
models.list; chat completions whole and streamed (the streamed deltas must equal the whole
reply, greedy); completions whole and streamed; embeddings as floats and in the client's default
base64 (decoded by the client); the client's exception classes for 401, 400 and 404; and curl's
raw view of the SSE framing. Exits non-zero with a message on the first failure.
"""
import json
import math
import os
import shutil
import subprocess
import sys

from client_tests import check, ensure_venv, fail, serve


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    chorus, model, venv = sys.argv[1:4]
    if not os.path.exists(model):
        fail("model %s is missing (../shared/models holds stories260K.gguf)" % model)
    ensure_venv(venv, {"openai": "openai"})
    import openai

    key = "sk-chorus-test"
    with serve(chorus, model, "-np", "2", "-c", "2048", "--api-key", key, "--alias", "tiny") as port:
        base = "http://127.0.0.1:%d/v1" % port
        client = openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=300)

        ids = [m.id for m in client.models.list().data]
        check(ids == ["tiny"], "models.list: %r" % ids)

        messages = [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "A cat and a dog"}]
        whole = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=24)
        reply = whole.choices[0].message.content
        check(whole.choices[0].message.role == "assistant", "chat role")
        check(isinstance(reply, str) and reply, "chat reply is empty: %r" % whole)
        check(whole.choices[0].finish_reason in ("stop", "length"), "chat finish_reason %r" % whole.choices[0].finish_reason)
        check(whole.usage.completion_tokens <= 24 and whole.usage.prompt_tokens > 0, "chat usage %r" % whole.usage)

        pieces, finish = [], None
        for chunk in client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=24,
                                                    stream=True):
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        check("".join(pieces) == reply, "streamed chat %r != whole %r" % ("".join(pieces), reply))
        check(finish == whole.choices[0].finish_reason, "streamed finish_reason %r" % finish)

        comp = client.completions.create(model="tiny", prompt="Once upon a time", temperature=0, max_tokens=20)
        text = comp.choices[0].text
        check(text, "completion is empty")
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model="tiny", prompt="Once upon a time", temperature=0, max_tokens=20, stream=True) if c.choices)
        check(streamed == text, "streamed completion %r != whole %r" % (streamed, text))

        floats = client.embeddings.create(model="tiny", input=["a cat", "a dog"], encoding_format="float")
        check(len(floats.data) == 2, "embeddings count")
        vec = floats.data[0].embedding
        check(abs(math.sqrt(sum(x * x for x in vec)) - 1.0) < 1e-4, "embedding is not unit length")
        default = client.embeddings.create(model="tiny", input="a cat")  # the client asks for base64
        check(len(default.data[0].embedding) == len(vec), "base64 embedding length")
        check(max(abs(a - b) for a, b in zip(default.data[0].embedding, vec)) < 1e-6, "base64 and float embeddings differ")

        bad_key = openai.OpenAI(base_url=base, api_key="wrong", max_retries=0, timeout=300)
        for call, error, what in [
            (lambda: bad_key.models.list(), openai.AuthenticationError, "wrong API key"),
            (lambda: client.chat.completions.create(model="tiny", messages=messages, n=2), openai.BadRequestError, "n=2"),
            (lambda: client.chat.completions.create(model="gpt-4o", messages=messages), openai.NotFoundError, "unknown model"),
        ]:
            try:
                call()
                fail(what + ": no error")
            except error as e:
                check(isinstance(e.body, dict) and "message" in e.body, what + ": error body %r" % e.body)

        if shutil.which("curl"):
            raw = subprocess.run(
                ["curl", "-sN", "--max-time", "300", base + "/chat/completions", "-H", "Authorization: Bearer " + key,
                 "-H", "Content-Type: application/json",
                 "-d", json.dumps({"messages": messages, "max_tokens": 8, "temperature": 0, "stream": True})],
                capture_output=True, text=True, check=True).stdout
            blocks = raw.split("\n\n")
            check(blocks[-1] == "" and blocks[-2] == "data: [DONE]", "SSE stream does not end with data: [DONE]: %r" % raw[-80:])
            for b in blocks[:-2]:
                check(b.startswith("data: ") and "\n" not in b, "SSE block is not one data line: %r" % b)
                json.loads(b[6:])
            print("curl: %d SSE events, well framed" % (len(blocks) - 2))
        else:
            print("curl not installed: the SSE framing check did not run", file=sys.stderr)
            sys.exit(1)
        print("openai %s: models, chat, stream, completions, embeddings, errors: OK" % openai.__version__)
        client.close()  # its kept-alive connections would hold server threads until their timeout
        bad_key.close()


if __name__ == "__main__":
    main()
