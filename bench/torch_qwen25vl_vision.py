#!/usr/bin/env python3
"""PyTorch eager float32 reference of the Qwen2.5-VL vision tower (as transformers'
Qwen2_5_VisionTransformerPretrainedModel computes it on a CPU with weights upcast to float32):
Conv3d patch embedding, 2D rotary embedding, window attention with full-attention blocks,
RMSNorm, SwiGLU MLP, PatchMerger, window order undone. Runs on the pixel values vision_bench
dumped, times the encode, and compares the embeddings with vlmforge's.

Usage: /usr/bin/python3 bench/torch_qwen25vl_vision.py --model DIR --dump PREFIX --grid T,H,W [--runs 2] [--threads N]
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_merge import load_dir  # noqa: E402


class VisionTower:
    def __init__(self, model_dir):
        cfg = json.load(open(os.path.join(model_dir, "config.json")))
        self.c = cfg["vision_config"]
        state = load_dir(model_dir)
        prefix = "visual." if "visual.patch_embed.proj.weight" in state else "model.visual."
        self.w = {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}
        del state
        self.d = self.c["hidden_size"]
        self.heads = self.c["num_heads"]
        self.head_dim = self.d // self.heads
        self.merge = self.c["spatial_merge_size"]
        rotary = self.head_dim // 2
        self.inv_freq = 1.0 / (10000 ** (torch.arange(0, rotary, 2, dtype=torch.float) / rotary))

    def norm(self, x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def rotary(self, t, h, w):
        m = self.merge
        hpos = torch.arange(h).unsqueeze(1).expand(-1, w).reshape(h // m, m, w // m, m).permute(0, 2, 1, 3).flatten()
        wpos = torch.arange(w).unsqueeze(0).expand(h, -1).reshape(h // m, m, w // m, m).permute(0, 2, 1, 3).flatten()
        pos = torch.stack([hpos, wpos], dim=-1).repeat(t, 1)
        full = torch.outer(torch.arange(max(h, w), dtype=torch.float), self.inv_freq)
        return full[pos].flatten(1)

    def window_index(self, t, h, w):
        ws = self.c["window_size"] // self.merge // self.c["patch_size"]
        lh, lw = h // self.merge, w // self.merge
        index = torch.arange(t * lh * lw).reshape(t, lh, lw)
        pad_h, pad_w = ws - lh % ws, ws - lw % ws
        nh, nw = (lh + pad_h) // ws, (lw + pad_w) // ws
        padded = F.pad(index, (0, pad_w, 0, pad_h), "constant", -100)
        padded = padded.reshape(t, nh, ws, nw, ws).permute(0, 1, 3, 2, 4).reshape(t, nh * nw, ws, ws)
        seqlens = (padded != -100).sum([2, 3]).reshape(-1)
        padded = padded.reshape(-1)
        order = padded[padded != -100]
        cu = torch.cat([torch.zeros(1, dtype=torch.long), seqlens.cumsum(0) * self.merge * self.merge])
        return order, torch.unique_consecutive(cu)

    def attention(self, x, p, cos, sin, bounds):
        n = x.shape[0]
        qkv = F.linear(x, self.w[p + "attn.qkv.weight"], self.w[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(n, 3, self.heads, self.head_dim).permute(1, 2, 0, 3).unbind(0)  # [heads, n, hd]

        def rope(t):
            half = self.head_dim // 2
            return t * cos + torch.cat([-t[..., half:], t[..., :half]], dim=-1) * sin

        q, k = rope(q), rope(k)
        out = torch.empty_like(q)
        for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            scores = torch.matmul(q[:, s:e], k[:, s:e].transpose(1, 2)) / self.head_dim ** 0.5
            out[:, s:e] = torch.matmul(torch.softmax(scores, dim=-1), v[:, s:e])
        out = out.transpose(0, 1).reshape(n, self.d)
        return F.linear(out, self.w[p + "attn.proj.weight"], self.w[p + "attn.proj.bias"])

    def forward(self, pixels, t, h, w):
        c = self.c
        x = pixels.view(-1, c.get("in_chans", 3), c["temporal_patch_size"], c["patch_size"], c["patch_size"])
        x = F.conv3d(x, self.w["patch_embed.proj.weight"], stride=x.shape[2:]).view(-1, self.d)
        unit = self.merge * self.merge
        order, cu_window = self.window_index(t, h, w)
        n = x.shape[0]
        x = x.reshape(n // unit, unit, -1)[order].reshape(n, -1)
        emb = self.rotary(t, h, w).reshape(n // unit, unit, -1)[order].reshape(n, -1)
        emb = torch.cat([emb, emb], dim=-1)
        cos, sin = emb.cos(), emb.sin()
        full = torch.tensor([0, n])
        for b in range(c["depth"]):
            p = f"blocks.{b}."
            bounds = full if b in c["fullatt_block_indexes"] else cu_window
            x = x + self.attention(self.norm(x, self.w[p + "norm1.weight"]), p, cos, sin, bounds)
            hdn = self.norm(x, self.w[p + "norm2.weight"])
            gate = F.linear(hdn, self.w[p + "mlp.gate_proj.weight"], self.w[p + "mlp.gate_proj.bias"])
            up = F.linear(hdn, self.w[p + "mlp.up_proj.weight"], self.w[p + "mlp.up_proj.bias"])
            x = x + F.linear(F.silu(gate) * up, self.w[p + "mlp.down_proj.weight"], self.w[p + "mlp.down_proj.bias"])
        x = self.norm(x, self.w["merger.ln_q.weight"]).view(-1, self.d * unit)
        x = F.linear(F.gelu(F.linear(x, self.w["merger.mlp.0.weight"], self.w["merger.mlp.0.bias"])),
                     self.w["merger.mlp.2.weight"], self.w["merger.mlp.2.bias"])
        return x[torch.argsort(order)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--grid", required=True)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t, h, w = (int(v) for v in a.grid.split(","))
    tower = VisionTower(a.model)
    pixels = torch.frombuffer(bytearray(open(a.dump + ".pixels.f32", "rb").read()), dtype=torch.float32)
    ours = torch.frombuffer(bytearray(open(a.dump + ".embeds.f32", "rb").read()), dtype=torch.float32)
    times = []
    with torch.no_grad():
        for _ in range(a.runs):
            start = time.perf_counter()
            out = tower.forward(pixels, t, h, w)
            times.append(time.perf_counter() - start)
    times.sort()
    ours = ours.view_as(out)
    diff = (out - ours).abs().max().item()
    print(json.dumps({"torch": torch.__version__, "threads": a.threads, "encode_s": times[len(times) // 2],
                      "max_abs_diff": diff, "max_abs_value": out.abs().max().item()}))


if __name__ == "__main__":
    main()
