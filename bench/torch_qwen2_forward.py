#!/usr/bin/env python3
"""PyTorch eager float32 reference for Qwen2 inference on the CPU: a small straightforward
forward with a KV cache, as `swift infer --infer_backend pt` runs transformers' model on a CPU
(weights upcast to float32, one token per decode step, greedy). Prints JSON with the greedy
tokens and prefill/decode tok/s so bench/infer_bench.sh can compare tokens and speed.

Usage: /usr/bin/python3 bench/torch_qwen2_forward.py --model DIR --ids 1,2,3 [--new 16] [--threads N]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_merge import load_dir  # noqa: E402


class Qwen2:
    def __init__(self, model_dir):
        self.cfg = json.load(open(os.path.join(model_dir, "config.json")))
        self.w = {k: v.float() for k, v in load_dir(model_dir).items()}
        c = self.cfg
        self.heads, self.kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = c["hidden_size"] // self.heads
        self.eps = c["rms_norm_eps"]
        self.layers = c["num_hidden_layers"]
        self.lm_head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        half = torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim
        self.inv_freq = 1.0 / (c["rope_theta"] ** half)

    def norm(self, x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rope(self, x, positions):  # x: [heads, tokens, head_dim]
        angles = positions[:, None].double() * self.inv_freq[None, :]
        emb = torch.cat([angles, angles], dim=-1)
        cos, sin = emb.cos().float(), emb.sin().float()
        half = self.head_dim // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    def forward(self, ids, cache):
        """ids: new tokens; cache: list of (k, v) per layer, extended in place. Returns last logits."""
        start = cache[0][0].shape[1] if cache[0] is not None else 0
        positions = torch.arange(start, start + len(ids))
        x = self.w["model.embed_tokens.weight"][torch.tensor(ids)]
        n = len(ids)
        for l in range(self.layers):
            p = f"model.layers.{l}."
            h = self.norm(x, self.w[p + "input_layernorm.weight"])
            q = torch.nn.functional.linear(h, self.w[p + "self_attn.q_proj.weight"], self.w[p + "self_attn.q_proj.bias"])
            k = torch.nn.functional.linear(h, self.w[p + "self_attn.k_proj.weight"], self.w[p + "self_attn.k_proj.bias"])
            v = torch.nn.functional.linear(h, self.w[p + "self_attn.v_proj.weight"], self.w[p + "self_attn.v_proj.bias"])
            q = self.rope(q.view(n, self.heads, self.head_dim).transpose(0, 1), positions)
            k = self.rope(k.view(n, self.kv_heads, self.head_dim).transpose(0, 1), positions)
            v = v.view(n, self.kv_heads, self.head_dim).transpose(0, 1)
            if cache[l] is not None:
                k = torch.cat([cache[l][0], k], dim=1)
                v = torch.cat([cache[l][1], v], dim=1)
            cache[l] = (k, v)
            group = self.heads // self.kv_heads
            kk, vv = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
            scores = q @ kk.transpose(1, 2) / self.head_dim**0.5
            total = kk.shape[1]
            mask = torch.ones(n, total, dtype=torch.bool).tril(diagonal=total - n)
            scores = scores.masked_fill(~mask, float("-inf"))
            attn = (scores.softmax(-1) @ vv).transpose(0, 1).reshape(n, -1)
            x = x + torch.nn.functional.linear(attn, self.w[p + "self_attn.o_proj.weight"])
            h = self.norm(x, self.w[p + "post_attention_layernorm.weight"])
            gate = torch.nn.functional.linear(h, self.w[p + "mlp.gate_proj.weight"])
            up = torch.nn.functional.linear(h, self.w[p + "mlp.up_proj.weight"])
            x = x + torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, self.w[p + "mlp.down_proj.weight"])
        x = self.norm(x[-1:], self.w["model.norm.weight"])
        return torch.nn.functional.linear(x, self.lm_head)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", required=True, help="comma-separated prompt token ids")
    ap.add_argument("--new", type=int, default=16, help="greedy tokens to generate")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = Qwen2(a.model)
    ids = [int(t) for t in a.ids.split(",")]
    with torch.inference_mode():
        cache = [None] * model.layers
        t0 = time.perf_counter()
        logits = model.forward(ids, cache)
        prefill = time.perf_counter() - t0
        tokens = [int(logits.argmax())]
        t0 = time.perf_counter()
        for _ in range(a.new - 1):
            tokens.append(int(model.forward([tokens[-1]], cache).argmax()))
        decode = time.perf_counter() - t0
    print(json.dumps({"tokens": tokens, "prefill_tok_s": len(ids) / prefill,
                      "decode_tok_s": (a.new - 1) / decode if a.new > 1 else None, "torch": torch.__version__,
                      "threads": a.threads}))


if __name__ == "__main__":
    main()
