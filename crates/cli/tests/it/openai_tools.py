"""Tool calls, JSON mode and text completions through `cloister proxy` with the official OpenAI
Python SDK, in front of a node whose upstream is a real llama-server; prints one JSON object.

Usage: openai_tools.py BASE_URL MODEL [API_KEY]

API_KEY (default: a placeholder the proxy forwards) is what the SDK sends as its bearer token: for
a paid node, the client's signed spend authorization. Each plain answer reports the node's metering
receipt (the proxy's `x-cloister-receipt` header, parsed) and its usage; each streamed answer is
followed by a plain one, whose receipt's cumulative amount then covers the stream too.

The tool requests carry two earlier turns that show the call format (a 135M model follows an
example better than a prompt), as crates/node/tests/it/upstream_tools.rs does.
"""

import json
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
api_key = sys.argv[3] if len(sys.argv) > 3 else "sk-test-forwarded"
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
out = {"sdk_version": openai.__version__}


def headers(raw):
    """The proxy's verdict headers on a raw response, and the node's metering receipt (parsed)."""
    return {
        "verified": raw.headers.get("x-cloister-verified"),
        "signature_verified": raw.headers.get("x-cloister-signature-verified"),
        "e2ee": raw.headers.get("x-cloister-e2ee"),
        "receipt": parsed_json(raw.headers.get("x-cloister-receipt")),
    }


def usage(answer):
    """The prompt and completion tokens an answer reports."""
    return {
        "prompt_tokens": answer.usage.prompt_tokens if answer.usage else None,
        "completion_tokens": answer.usage.completion_tokens if answer.usage else None,
    }


def parsed_json(text):
    """`text` parsed as JSON, or None when it is not JSON."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def example_call(call_id, city):
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
            }
        ],
    }


tool_args = {
    "model": model,
    "messages": [
        {"role": "user", "content": "What is the weather in London?"},
        example_call("call_1", "London"),
        {"role": "user", "content": "What is the weather in Tokyo?"},
        example_call("call_2", "Tokyo"),
        {"role": "user", "content": "What is the weather in Paris?"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ],
    "tool_choice": "required",
    "temperature": 0,
    "max_tokens": 64,
}

# (1) A tool call, plain.
raw = client.chat.completions.with_raw_response.create(**tool_args)
answer = raw.parse()
choice = answer.choices[0]
call = (choice.message.tool_calls or [None])[0]
out["tool"] = {
    "finish_reason": choice.finish_reason,
    "type": call.type if call else None,
    "name": call.function.name if call else None,
    "arguments": parsed_json(call.function.arguments) if call else None,
    **usage(answer),
    **headers(raw),
}

# (2) The same call streamed: the SDK's deltas accumulate to a name and JSON arguments.
names, arguments, finish, deltas = [], [], None, 0
with client.chat.completions.create(**tool_args, stream=True) as stream:
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                deltas += 1
                if delta.function and delta.function.name:
                    names.append(delta.function.name)
                if delta.function and delta.function.arguments:
                    arguments.append(delta.function.arguments)
            finish = choice.finish_reason or finish
out["tool_stream"] = {
    "name": "".join(names),
    "arguments": parsed_json("".join(arguments)),
    "finish_reason": finish,
    "deltas": deltas,
}

# (3) JSON mode.
raw = client.chat.completions.with_raw_response.create(
    model=model,
    messages=[
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "Give the name and country of the capital of France as JSON."},
    ],
    response_format={"type": "json_object"},
    temperature=0,
    max_tokens=64,
)
answer = raw.parse()
content = answer.choices[0].message.content
out["json_mode"] = {
    "content": content,
    "parsed": parsed_json(content),
    "is_json": parsed_json(content) is not None,
    **usage(answer),
    **headers(raw),
}

# (4) Text completions, streamed, then plain.
pieces, finish = [], None
with client.completions.create(
    model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
) as stream:
    for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.text)
            finish = choice.finish_reason or finish
out["completion_stream"] = {"text": "".join(pieces), "finish_reason": finish}

raw = client.completions.with_raw_response.create(
    model=model, prompt="The capital of France is", max_tokens=8, temperature=0
)
completion = raw.parse()
out["completion"] = {
    "object": completion.object,
    "text": completion.choices[0].text,
    "finish_reason": completion.choices[0].finish_reason,
    **usage(completion),
    **headers(raw),
}

print(json.dumps(out))
