#!/usr/bin/env python3
"""Writes the expected renders that tests/test_chat_template.cpp compares chorus against.

Every template listed in TEMPLATES is rendered with every conversation in conversations.json,
and every snippet in features.json is rendered on its own, by Python Jinja2 configured as
Hugging Face transformers and llama.cpp configure it: ImmutableSandboxedEnvironment with
trim_blocks, lstrip_blocks and the loopcontrols extension, a raise_exception() global, and a
strftime_now() global that sees the fixed clock NOW. Conversations with tools, and features that
ask for it, are also rendered with the |tojson that transformers installs in place of Jinja2's.

Output (all under renders/): manifest.json, which lists the cases, and one file per case:
  renders/<template>/<conversation>[.transformers].txt  the exact rendered text (UTF-8), or
  renders/<template>/<conversation>.error   "raised: <message>" when the template called
                                            raise_exception, "error: <Type>: <message>" for any
                                            other Jinja2 failure
and the same for renders/features/<snippet>.

Regenerate (from the repository root):
  python3 -m venv /tmp/venv && /tmp/venv/bin/pip install jinja2
  /tmp/venv/bin/python tests/data/chat_templates/make_renders.py
"""
import datetime
import json
import pathlib
import shutil

import jinja2
import jinja2.ext
import jinja2.sandbox

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "renders"

# name: (file, bos_token, eos_token), the tokens from each model's tokenizer_config.json.
TEMPLATES = {
    "smollm2": ("smollm2.jinja", "<|im_start|>", "<|im_end|>"),
    "gemma3": ("gemma3.jinja", "<bos>", "<eos>"),
    "llama3.2": ("llama3.2.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "llama2": ("llama2.jinja", "<s>", "</s>"),
    "mistral-v0.1": ("mistral-v0.1.jinja", "<s>", "</s>"),
    "mixtral-v0.1": ("mixtral-v0.1.jinja", "<s>", "</s>"),
    "qwen2.5": ("qwen2.5.jinja", "", "<|im_end|>"),
    "qwen3": ("qwen3.jinja", "", "<|im_end|>"),
    "phi3": ("phi3.jinja", "<s>", "<|endoftext|>"),
    "deepseek-r1-distill": ("deepseek-r1-distill.jinja", "<\uff5cbegin\u2581of\u2581sentence\uff5c>",
                            "<\uff5cend\u2581of\u2581sentence\uff5c>"),
}

# The clock strftime_now() sees; the C++ test uses the same instant (manifest "now", UTC).
NOW = datetime.datetime(2026, 12, 5, 9, 30, 0, tzinfo=datetime.timezone.utc)


class Raised(jinja2.exceptions.TemplateError):
    """What raise_exception() throws, told apart from Jinja2's own errors."""


def raise_exception(message):
    raise Raised(message)


def strftime_now(fmt):
    return NOW.strftime(fmt)


def transformers_tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """The |tojson transformers installs in place of Jinja2's (no HTML escapes, keys unsorted)."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def environment(tojson="jinja2"):
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    # transformers' {% generation %} marker renders its body; features.json checks chorus does too.
    env.add_extension(GenerationTag)
    if tojson == "transformers":
        env.filters["tojson"] = transformers_tojson
    return env


class GenerationTag(jinja2.ext.Extension):
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def render(env, source, variables):
    try:
        return "txt", env.from_string(source).render(**variables)
    except Raised as e:
        return "error", f"raised: {e.message}"
    except Exception as e:  # any other failure: chorus must fail too
        return "error", f"error: {type(e).__name__}: {e}"


def write(path, kind, text):
    path = path.parent / (path.name + "." + kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return str(path.relative_to(HERE))


def main():
    envs = {"jinja2": environment(), "transformers": environment("transformers")}
    conversations = json.loads((HERE / "conversations.json").read_text(encoding="utf-8"))
    features = json.loads((HERE / "features.json").read_text(encoding="utf-8"))
    shutil.rmtree(OUT, ignore_errors=True)
    cases = []
    for name, (file, bos, eos) in TEMPLATES.items():
        source = (HERE / file).read_text(encoding="utf-8")
        for conv_name, conv in conversations.items():
            variables = dict(conv.get("variables", {}))
            variables.update(messages=conv["messages"], add_generation_prompt=conv["add_generation_prompt"],
                             bos_token=bos, eos_token=eos)
            # Conversations with tools are rendered with both |tojson flavours.
            for tojson in (["jinja2", "transformers"] if "tools" in variables else ["jinja2"]):
                kind, text = render(envs[tojson], source, variables)
                suffix = "" if tojson == "jinja2" else "." + tojson
                expected = write(OUT / name / (conv_name + suffix), kind, text)
                cases.append({"template": file, "conversation": conv_name, "tojson": tojson, "bos_token": bos,
                              "eos_token": eos, "expected": expected})
    feature_cases = []
    for name, feature in features.items():
        tojson = feature.get("tojson", "jinja2")
        kind, text = render(envs[tojson], feature["source"], feature.get("variables", {}))
        feature_cases.append({"feature": name, "tojson": tojson, "expected": write(OUT / "features" / name, kind, text)})
    manifest = {"jinja2_version": jinja2.__version__, "now": int(NOW.timestamp()), "cases": cases,
                "features": feature_cases}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    n_err = sum(1 for c in cases if c["expected"].endswith(".error"))
    print(f"{len(cases)} template renders ({n_err} expected errors), {len(feature_cases)} features, Jinja2 {jinja2.__version__}")


if __name__ == "__main__":
    main()
