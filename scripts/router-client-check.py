#!/usr/bin/env python3
"""Drives the inference-router with the official `openai` Python package.

Checks chat (plain and streamed, with usage), a tool call passed through
(the model simulator answers a `tool_choice` that names a function with a
scripted call to it) and embeddings (the package asks for base64 and
decodes it). Prints one line per check; exits non-zero with the reason on
the first failure.

    .venv/bin/python scripts/router-client-check.py \
        --base-url http://127.0.0.1:8080/v1 --model sim-model --tenant acme
"""

import argparse
import json
import sys

try:
    import openai
except ImportError:
    sys.exit(
        "the openai package is missing from this Python: run scripts/test, "
        "or .venv/bin/python -m pip install openai==3.51.0"
    )


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="sim-model")
    parser.add_argument("--tenant", default="default")
    # The router honours the tenant header only with a service token.
    parser.add_argument("--service-token", default="")
    args = parser.parse_args()

    client = openai.OpenAI(
        base_url=args.base_url,
        api_key="unused",
        default_headers={"agentmesh-tenant": args.tenant}
        | ({"agentmesh-service-token": args.service_token} if args.service_token else {}),
        max_retries=0,
        timeout=30,
    )
    messages = [{"role": "user", "content": "alpha beta gamma"}]

    chat = client.chat.completions.create(
        model=args.model, messages=messages, max_tokens=3, temperature=0, seed=7
    )
    text = chat.choices[0].message.content
    check(text, f"chat: no content in {chat}")
    check(chat.usage.completion_tokens == 3, f"chat: usage {chat.usage}")
    check(chat.usage.prompt_tokens == 3, f"chat: usage {chat.usage}")
    print(f"ok chat: {text!r}, usage {chat.usage.prompt_tokens}+{chat.usage.completion_tokens}")

    stream = client.chat.completions.create(
        model=args.model,
        messages=messages,
        max_tokens=3,
        temperature=0,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            streamed += choice.delta.content or ""
            finish = choice.finish_reason or finish
    check(streamed == text, f"stream: {streamed!r} differs from {text!r}")
    check(usage is not None and usage.completion_tokens == 3, f"stream: usage {usage}")
    check(finish is not None, "stream: no finish_reason")
    print(f"ok stream: {streamed!r}, finish {finish}")

    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "look a word up",
                "parameters": {
                    "type": "object",
                    "properties": {"input": {"type": "string"}},
                    "required": ["input"],
                },
            },
        }
    ]
    choice = {"type": "function", "function": {"name": "lookup"}}
    called = client.chat.completions.create(
        model=args.model, messages=messages, tools=tools, tool_choice=choice
    )
    message = called.choices[0].message
    check(called.choices[0].finish_reason == "tool_calls", f"tools: {called}")
    check(message.tool_calls and len(message.tool_calls) == 1, f"tools: {message}")
    call = message.tool_calls[0]
    check(call.function.name == "lookup", f"tools: {call}")
    arguments = json.loads(call.function.arguments)
    check(arguments == {"input": "alpha beta gamma"}, f"tools: arguments {arguments}")
    print(f"ok tool call: {call.function.name}({call.function.arguments})")

    stream = client.chat.completions.create(
        model=args.model, messages=messages, tools=tools, tool_choice=choice, stream=True
    )
    name, streamed_arguments, finish = "", "", None
    for chunk in stream:
        for c in chunk.choices:
            for delta in c.delta.tool_calls or []:
                name += delta.function.name or ""
                streamed_arguments += delta.function.arguments or ""
            finish = c.finish_reason or finish
    check(name == "lookup" and finish == "tool_calls", f"tools stream: {name!r} {finish!r}")
    check(json.loads(streamed_arguments) == arguments, f"tools stream: {streamed_arguments!r}")
    print("ok streamed tool call")

    embedded = client.embeddings.create(model=args.model, input=["alpha beta", "gamma"])
    check(len(embedded.data) == 2, f"embeddings: {len(embedded.data)} vectors")
    vector = embedded.data[0].embedding
    check(len(vector) > 0 and all(isinstance(x, float) for x in vector), "embeddings: vector")
    norm = sum(x * x for x in vector) ** 0.5
    check(abs(norm - 1.0) < 1e-3, f"embeddings: norm {norm}")
    check(embedded.usage.prompt_tokens == 3, f"embeddings: usage {embedded.usage}")
    floats = client.embeddings.create(
        model=args.model, input="alpha beta", dimensions=8, encoding_format="float"
    )
    check(len(floats.data[0].embedding) == 8, "embeddings: dimensions")
    print(f"ok embeddings: {len(embedded.data)} x {len(vector)}, float and base64")

    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        check(False, "an unknown model was served")
    except openai.APIStatusError as error:
        check(error.status_code in (400, 404), f"unknown model: {error.status_code}")
    print("ok errors: unknown model refused in OpenAI's shape")


if __name__ == "__main__":
    try:
        main()
    except (AssertionError, openai.OpenAIError) as error:
        sys.exit(f"router client check failed: {error}")
