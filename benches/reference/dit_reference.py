"""PyTorch reference of the crate's DiT for the speed comparison of `cargo run --example bench`.

Same architecture as `erg::models::dit` (Peebles & Xie's DiT with adaLN-Zero, fixed 2-D sin-cos
positions, 256-d sinusoidal timestep features, label table with a null row, erf-GELU MLP), same
config (read from the model card JSON the bench passes), same batch, same work per step:
- training step: rectified-flow loss on random data (logit-normal t), backward, AdamW, EMA update;
- sampling step: one forward of 2 × batch rows (CFG's batched positive and negative).
Prints one JSON object with the median seconds per step, eager and (when it works) torch.compile.
The weights are random: only time is compared, never outputs.

    python benches/reference/dit_reference.py --card data/checkpoints/emoji-dit-ema.json --batch 64

`--serve` keeps the model in one process for the interleaved size table of
`cargo run --example bench -- --config ...`: it prints one JSON line (versions, threads, device),
then answers each line `train`, `sample` or `matmul10` (ten products of the MLP's shape) on
stdin with the seconds of one such step (after
`torch.cuda.synchronize()` on a GPU), so that candle and PyTorch steps alternate A/B/A/B.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def sincos_2d(d, gh, gw):
    def one(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], 1)

    gy, gx = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij")
    return torch.cat([one(d // 2, gx), one(d // 2, gy)], 1).float()[None]


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(self, d, heads, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        h = int(d * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(d, h), nn.Linear(h, d)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x, c):
        b, n, d = x.shape
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).chunk(6, dim=1)
        q, k, v = self.qkv(modulate(self.norm1(x), s1, sc1)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5, dim=-1) @ v
        x = x + g1[:, None] * self.proj(a.transpose(1, 2).reshape(b, n, d))
        h = self.fc2(F.gelu(self.fc1(modulate(self.norm2(x), s2, sc2))))
        return x + g2[:, None] * h


class DiT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.h, self.w = cfg["input_size"]
        self.p, self.c, d = cfg["patch_size"], cfg["in_channels"], cfg["hidden_size"]
        self.gh, self.gw = self.h // self.p, self.w // self.p
        self.x_embedder = nn.Conv2d(self.c, d, self.p, self.p)
        self.register_buffer("pos", sincos_2d(d, self.gh, self.gw))
        self.t_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.y_table = nn.Embedding(cfg["num_classes"] + 1, d)
        self.blocks = nn.ModuleList(Block(d, cfg["num_heads"], cfg["mlp_ratio"]) for _ in range(cfg["depth"]))
        self.norm_f = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_f = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, self.p * self.p * self.c)
        half = 128
        self.register_buffer("freqs", torch.exp(-math.log(10000) * torch.arange(half) / half))

    def forward(self, x, t, y):
        b = x.shape[0]
        x = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos
        a = (t * 1000)[:, None] * self.freqs[None]
        c = self.t_mlp(torch.cat([a.cos(), a.sin()], 1)) + self.y_table(y)
        for blk in self.blocks:
            x = blk(x, c)
        s, sc = self.ada_f(c).chunk(2, dim=1)
        x = self.out(modulate(self.norm_f(x), s, sc))
        x = x.reshape(b, self.gh, self.gw, self.p, self.p, self.c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, self.c, self.h, self.w)


def timed(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def steps(model, cfg, batch, device="cpu"):
    """The two timed steps as closures over one model, optimizer and EMA."""
    opt = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.0)
    ema = [p.detach().clone() for p in model.parameters()]
    h, w = cfg["input_size"]
    x1 = torch.randn(batch, cfg["in_channels"], h, w, device=device)
    y = torch.randint(0, cfg["num_classes"] + 1, (batch,), device=device)

    def train_step():
        eps = torch.randn_like(x1)
        t = torch.sigmoid(torch.randn(batch, device=device))
        xt = t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * eps
        loss = F.mse_loss(model(xt, t, y), x1 - eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, model.parameters()):
                e.lerp_(p, 1 - 0.999)

    xs = torch.randn(2 * batch, cfg["in_channels"], h, w, device=device)
    ts = torch.full((2 * batch,), 0.5, device=device)
    ys = torch.cat([y, torch.full((batch,), cfg["num_classes"], device=device)])

    def sample_step():
        with torch.no_grad():
            model(xs, ts, ys)

    return train_step, sample_step


def measure(model, cfg, batch, reps):
    train_step, sample_step = steps(model, cfg, batch)
    return timed(train_step, reps), timed(sample_step, reps)


def serve(cfg, batch, device):
    """One model; answers `train` / `sample` lines with one step's seconds."""
    import sys

    model = DiT(cfg).to(device)
    train_step, sample_step = steps(model, cfg, batch, device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "device": name, "batch": batch}), flush=True)
    # The matmul of the MLP's shape, (2B·N × D) @ (D × 4D): the ceiling the forward is compared with.
    h, w = cfg["input_size"]
    rows = 2 * batch * (h // cfg["patch_size"]) * (w // cfg["patch_size"])
    d = cfg["hidden_size"]
    a_mm = torch.randn(rows, d, device=device)
    b_mm = torch.randn(d, int(cfg["mlp_ratio"] * d), device=device)

    def matmul():
        for _ in range(10):
            a_mm @ b_mm

    for line in sys.stdin:
        fn = {"train": train_step, "sample": sample_step, "matmul10": matmul}.get(line.strip())
        if fn is None:
            print(f"unknown command {line.strip()!r}", file=sys.stderr, flush=True)
            return 1
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        print(time.perf_counter() - t0, flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--card", help="model card JSON (its `config`)")
    ap.add_argument("--config", help="the DiT config as JSON (instead of --card)")
    ap.add_argument("--serve", action="store_true", help="answer train/sample lines (see the module docstring)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = json.loads(a.config) if a.config else json.load(open(a.card))["config"]
    torch.manual_seed(0)
    if a.serve:
        raise SystemExit(serve(cfg, a.batch, a.device))
    model = DiT(cfg)
    train_s, sample_s = measure(model, cfg, a.batch, a.reps)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": a.batch, "eager_train_step_s": train_s, "eager_sample_step_s": sample_s}
    if not a.no_compile:
        try:
            compiled = torch.compile(DiT(cfg))
            out["compile_train_step_s"], out["compile_sample_step_s"] = measure(compiled, cfg, a.batch, a.reps)
        except Exception as e:  # no C++ toolchain, unsupported platform, ...
            out["compile_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
