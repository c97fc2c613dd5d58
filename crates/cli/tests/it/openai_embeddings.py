"""Drives `cloister proxy`'s /v1/embeddings with the official OpenAI Python SDK; prints one JSON
object of results (the Rust test asserts on them).

Usage: openai_embeddings.py BASE_URL MODEL
"""

import json
import math
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="sk-test-forwarded", max_retries=0)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


texts = ["The cat sat on the mat.", "The cat sat on the mat.", "Quarterly revenue rose by four percent."]
# The SDK asks for base64 by default and decodes it; float is asked for explicitly once too.
raw = client.embeddings.with_raw_response.create(model=model, input=texts)
answer = raw.parse()
floats = client.embeddings.create(model=model, input=texts[0], encoding_format="float")
vectors = [d.embedding for d in answer.data]
out = {
    "sdk_version": openai.__version__,
    "count": len(vectors),
    "dimensions": [len(v) for v in vectors],
    "indices": [d.index for d in answer.data],
    "norm": math.sqrt(sum(x * x for x in vectors[0])),
    "same": cosine(vectors[0], vectors[1]),
    "different": cosine(vectors[0], vectors[2]),
    "float_vs_base64": cosine(floats.data[0].embedding, vectors[0]),
    "prompt_tokens": answer.usage.prompt_tokens,
    "total_tokens": answer.usage.total_tokens,
    "model": answer.model,
    "verified": raw.headers.get("x-cloister-verified"),
    "signature_verified": raw.headers.get("x-cloister-signature-verified"),
    "e2ee": raw.headers.get("x-cloister-e2ee"),
}
print(json.dumps(out))
