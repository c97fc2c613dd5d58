"""Drives `cloister proxy` with the official OpenAI Python SDK; prints one JSON object of results.

Usage: openai_client.py BASE_URL MODEL
"""

import json
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="sk-test-forwarded", max_retries=0)
out = {"sdk_version": openai.__version__}

out["models"] = [m.id for m in client.models.list().data]

raw = client.chat.completions.with_raw_response.create(
    model=model,
    messages=[{"role": "user", "content": "Say hello."}],
    max_tokens=8,
)
completion = raw.parse()
out["chat"] = {
    "content": completion.choices[0].message.content,
    "verified": raw.headers.get("x-cloister-verified"),
    "signature_verified": raw.headers.get("x-cloister-signature-verified"),
    "signer": raw.headers.get("x-cloister-signer"),
    "e2ee": raw.headers.get("x-cloister-e2ee"),
}

pieces = []
with client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Count to three."}],
    max_tokens=8,
    stream=True,
) as stream:
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
out["stream"] = {"content": "".join(pieces), "chunks": len(pieces)}

raw = client.completions.with_raw_response.create(model=model, prompt="Complete me.", max_tokens=8)
text_completion = raw.parse()
out["completion"] = {
    "object": text_completion.object,
    "text": text_completion.choices[0].text,
    "finish_reason": text_completion.choices[0].finish_reason,
    "completion_tokens": text_completion.usage.completion_tokens if text_completion.usage else None,
    "verified": raw.headers.get("x-cloister-verified"),
    "signature_verified": raw.headers.get("x-cloister-signature-verified"),
    "signer": raw.headers.get("x-cloister-signer"),
    "e2ee": raw.headers.get("x-cloister-e2ee"),
}

pieces, finish = [], None
with client.completions.create(
    model=model,
    prompt="Stream me.",
    max_tokens=8,
    stream=True,
    stream_options={"include_usage": True},
) as stream:
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            pieces.append(choice.text)
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
out["completion_stream"] = {
    "text": "".join(pieces),
    "finish_reason": finish,
    "completion_tokens": usage.completion_tokens if usage else None,
}

try:
    client.chat.completions.create(
        model="no-such-model",
        messages=[{"role": "user", "content": "hi"}],
    )
    out["error"] = None
except openai.APIStatusError as e:
    body = e.body if isinstance(e.body, dict) else {}
    out["error"] = {"status": e.status_code, "code": body.get("code") or getattr(e, "code", None)}

print(json.dumps(out))
