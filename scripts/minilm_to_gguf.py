"""Converts the sentence-transformers all-MiniLM-L6-v2 directory (BERT: safetensors + tokenizer.json)
to an F16 GGUF that llama.cpp loads as an embedding model (mean pooling), with numpy only.

It writes the same bytes as llama.cpp's own convert_hf_to_gguf.py (which needs torch, a multi-GB
install): scripts/fetch-embedding-model.sh checks the output's SHA-256 against the GGUF that
converter produced. Usage: minilm_to_gguf.py HF_DIR OUT.gguf
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np

ALIGN = 32
# GGUF value types.
U32, I32, F32, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
# GGML tensor types.
GGML_F32, GGML_F16 = 0, 1


def gguf_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    out = gguf_string(key) + struct.pack("<I", vtype)
    if vtype == U32:
        out += struct.pack("<I", value)
    elif vtype == F32:
        out += struct.pack("<f", value)
    elif vtype == BOOL:
        out += struct.pack("<?", value)
    elif vtype == STRING:
        out += gguf_string(value)
    else:
        raise ValueError(vtype)
    return out


def kv_array(key, etype, values):
    out = gguf_string(key) + struct.pack("<I", ARRAY) + struct.pack("<IQ", etype, len(values))
    if etype == STRING:
        out += b"".join(gguf_string(v) for v in values)
    elif etype == I32:
        out += struct.pack(f"<{len(values)}i", *values)
    else:
        raise ValueError(etype)
    return out


def read_safetensors(path):
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name in sorted(k for k in header if k != "__metadata__"):
        info = header[name]
        if name.endswith("position_ids"):
            continue  # a buffer of 0..n, not a weight; llama.cpp drops it too
        if info["dtype"] != "F32":
            raise SystemExit(f"{name}: expected F32 weights, got {info['dtype']}")
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(raw[base + start : base + end], dtype="<f4").reshape(info["shape"])
    return tensors


def gguf_name(hf):
    """The llama.cpp name of a BERT tensor; None for the ones it drops (pooler, position ids)."""
    name = hf.removeprefix("bert.")
    fixed = {
        "embeddings.word_embeddings.weight": "token_embd.weight",
        "embeddings.position_embeddings.weight": "position_embd.weight",
        "embeddings.token_type_embeddings.weight": "token_types.weight",
        "embeddings.LayerNorm.weight": "token_embd_norm.weight",
        "embeddings.LayerNorm.bias": "token_embd_norm.bias",
    }
    if name in fixed:
        return fixed[name]
    if not name.startswith("encoder.layer."):
        return None
    _, _, layer, rest = name.split(".", 3)
    part, kind = rest.rsplit(".", 1)
    parts = {
        "attention.self.query": "attn_q",
        "attention.self.key": "attn_k",
        "attention.self.value": "attn_v",
        "attention.output.dense": "attn_output",
        "attention.output.LayerNorm": "attn_output_norm",
        "intermediate.dense": "ffn_up",
        "output.dense": "ffn_down",
        "output.LayerNorm": "layer_output_norm",
    }
    if part not in parts:
        raise SystemExit(f"unexpected tensor {hf}")
    return f"blk.{layer}.{parts[part]}.{kind}"


def main():
    hf_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    config = json.loads((hf_dir / "config.json").read_text())
    tokenizer = json.loads((hf_dir / "tokenizer.json").read_text())
    if config.get("model_type") != "bert" or tokenizer["model"]["type"] != "WordPiece":
        raise SystemExit("not a BERT WordPiece model")

    vocab = tokenizer["model"]["vocab"]
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    special = {t["content"]: t["id"] for t in tokenizer["added_tokens"] if t.get("special")}
    tokens, types = [], []
    for text, _ in by_id:
        if text in special:
            tokens.append(text)
            types.append(3)  # control
        elif text.startswith("##"):
            tokens.append(text[2:])
            types.append(1)
        else:
            tokens.append("\u2581" + text)  # word start, as llama.cpp's WPM vocab marks it
            types.append(1)

    meta = b"".join(
        [
            kv("general.architecture", STRING, "bert"),
            kv("general.type", STRING, "model"),
            kv("general.name", STRING, "MiniLM L6 H384 Uncased"),
            kv("general.version", STRING, "v2"),
            kv("general.organization", STRING, "Nreimers"),
            kv("general.basename", STRING, "all-MiniLM-L6"),
            kv("general.size_label", STRING, "23M"),
            kv("bert.block_count", U32, config["num_hidden_layers"]),
            kv("bert.context_length", U32, config["max_position_embeddings"]),
            kv("bert.embedding_length", U32, config["hidden_size"]),
            kv("bert.feed_forward_length", U32, config["intermediate_size"]),
            kv("bert.attention.head_count", U32, config["num_attention_heads"]),
            kv("bert.attention.layer_norm_epsilon", F32, config["layer_norm_eps"]),
            kv("general.file_type", U32, 1),  # mostly F16
            kv("bert.attention.causal", BOOL, False),
            kv("bert.pooling_type", U32, 1),  # mean
            kv("general.quantization_version", U32, 2),
            kv("tokenizer.ggml.token_type_count", U32, config["type_vocab_size"]),
            kv("tokenizer.ggml.model", STRING, "bert"),
            kv("tokenizer.ggml.pre", STRING, "jina-v2-en"),
            kv_array("tokenizer.ggml.tokens", STRING, tokens),
            kv_array("tokenizer.ggml.token_type", I32, types),
            kv("tokenizer.ggml.bos_token_id", U32, special["[CLS]"]),
            kv("tokenizer.ggml.eos_token_id", U32, special["[SEP]"]),
            kv("tokenizer.ggml.unknown_token_id", U32, special["[UNK]"]),
            kv("tokenizer.ggml.seperator_token_id", U32, special["[SEP]"]),
            kv("tokenizer.ggml.padding_token_id", U32, special["[PAD]"]),
            kv("tokenizer.ggml.mask_token_id", U32, special["[MASK]"]),
            kv("tokenizer.ggml.add_bos_token", BOOL, True),
            kv("tokenizer.ggml.add_eos_token", BOOL, True),
            kv("tokenizer.ggml.add_sep_token", BOOL, False),
            kv("tokenizer.ggml.normalizer.lowercase", BOOL, bool(tokenizer["normalizer"].get("lowercase"))),
        ]
    )
    kv_count = 32

    tensors = []
    for hf, array in read_safetensors(hf_dir / "model.safetensors").items():
        name = gguf_name(hf)
        if name is None:
            continue
        keep_f32 = array.ndim == 1 or name in ("position_embd.weight", "token_types.weight")
        data = array.astype(np.float32 if keep_f32 else np.float16)
        tensors.append((name, data, GGML_F32 if keep_f32 else GGML_F16))

    infos, offset = b"", 0
    for name, data, ggml_type in tensors:
        dims = list(reversed(data.shape))  # ggml order: the fastest-moving dimension first
        infos += gguf_string(name) + struct.pack("<I", len(dims))
        infos += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", ggml_type, offset)
        offset += -(-data.nbytes // ALIGN) * ALIGN

    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), kv_count) + meta + infos
    with open(out, "wb") as f:
        f.write(header)
        f.write(b"\0" * (-len(header) % ALIGN))
        for _, data, _ in tensors:
            blob = data.tobytes()
            f.write(blob)
            f.write(b"\0" * (-len(blob) % ALIGN))


if __name__ == "__main__":
    main()
