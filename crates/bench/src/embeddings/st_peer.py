"""The sentence-transformers peer of `cloister bench embeddings`: encodes the same sentences with the
same batch size on the same number of threads, ROUNDS times, and prints one JSON object: the seconds
of each round and the vectors of the last one (for the agreement check).

Usage: st_peer.py MODEL_DIR SENTENCES_JSON THREADS BATCH ROUNDS
"""

import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

model_dir, sentences_path, threads, batch, rounds = sys.argv[1:6]
torch.set_num_threads(int(threads))
torch.set_num_interop_threads(1)
sentences = json.load(open(sentences_path))
model = SentenceTransformer(model_dir, device="cpu")
model.encode(sentences[: int(batch)], batch_size=int(batch))  # warm-up
seconds = []
vectors = None
with torch.inference_mode():
    for _ in range(int(rounds)):
        started = time.perf_counter()
        vectors = model.encode(sentences, batch_size=int(batch), convert_to_numpy=True)
        seconds.append(time.perf_counter() - started)
print(json.dumps({
    "seconds": seconds,
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "vectors": vectors.tolist(),
}))
