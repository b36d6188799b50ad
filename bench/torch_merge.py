#!/usr/bin/python3
"""Peer for bench/merge_bench.sh: merge a LoRA adapter the way PEFT's merge_and_unload does on a
CPU host (what `swift merge-lora` runs): load the whole model into memory, add
(B @ A) * scale computed in float32 and cast to the weight dtype, then save safetensors shards.

Debian 12 has python3-torch but no `safetensors` or `peft` package, so the (simple) file format is
read and written here directly. Plain LoRA only (what the benchmark adapter uses).
"""
import argparse
import json
import math
import os
import struct

import torch

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
NAMES = {v: k for k, v in DTYPES.items()}


def load_file(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        buf = bytearray(data[8 + n + begin : 8 + n + end])
        out[name] = torch.frombuffer(buf, dtype=DTYPES[info["dtype"]]).reshape(info["shape"]).clone()
    return out


def load_dir(path):
    index = os.path.join(path, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    state = {}
    for f in files:
        state.update(load_file(os.path.join(path, f)))
    return state


def save_file(path, tensors):
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, t in tensors.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for b in blobs:
            f.write(b)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--adapter", required=True)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--max_shard_size", type=int, default=5_000_000_000)
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count())

    state = load_dir(args.model)
    cfg = json.load(open(os.path.join(args.adapter, "adapter_config.json")))
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    lora = load_file(os.path.join(args.adapter, "adapter_model.safetensors"))
    prefix = "base_model.model."
    with torch.no_grad():
        for key, a in lora.items():
            if ".lora_A." not in key:
                continue
            module = key[len(prefix):].split(".lora_A.")[0]
            b = lora[key.replace(".lora_A.", ".lora_B.")]
            w = state[module + ".weight"]
            delta = (b.float() @ a.float()) * scale  # PEFT casts to fp32 on CPU for bf16/fp16
            w += delta.to(w.dtype)

    os.makedirs(args.output_dir, exist_ok=True)
    shards, current, size = [], {}, 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if current and size + n > args.max_shard_size:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += n
    shards.append(current)
    for i, shard in enumerate(shards):
        name = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(os.path.join(args.output_dir, name), shard)


if __name__ == "__main__":
    main()
