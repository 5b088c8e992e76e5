"""Reference fixtures of the ImageNet models: the official DiT (facebookresearch/DiT `models.py` and
`diffusion/`) and SiT (willisma/SiT `models.py` and `transport/`) code, and diffusers' AutoencoderKL
with the SD VAE's settings, on tiny random weights.

Run once by a developer (not by CI); the outputs are committed under `tests/fixtures/imagenet/`:

    git clone https://github.com/facebookresearch/DiT /tmp/refs/DiT
    git clone https://github.com/willisma/SiT /tmp/refs/SiT
    pip install torch timm torchdiffeq diffusers safetensors
    python benches/reference/imagenet_reference.py --dit /tmp/refs/DiT --sit /tmp/refs/SiT

The official code is imported from those clones (never copied into the crate). What it writes:
- `dit_tiny.pt` (a pickled state dict, as the official `DiT-XL-2-256x256.pt`) and
  `dit_tiny.safetensors`: a DiT with `learn_sigma=True` (8 output channels), 2 blocks, D = 64;
- `sit_tiny.pt`: the same architecture from SiT's `models.py`, saved as `{"ema": state_dict}`
  (SiT's released checkpoints carry an `ema` entry);
- `sd_vae/`: a diffusers `AutoencoderKL` folder with the SD VAE's settings (4 latent channels,
  quant convs, scaling 0.18215) at a tiny width;
- `fixtures.safetensors`: each network's output on fixed inputs (DiT at DDPM indices, SiT at
  t ∈ [0, 1]), the DDIM (η = 0, 4 respaced steps, `clip_denoised=False` as DiT's sampling) states
  from fixed noise and labels, SiT's ODE with the Euler method (5 grid points = 4 steps), the VAE's
  decode of a fixed latent and its encoder mean of the decoded image.
"""
import argparse
import importlib.util
import os
import sys

import torch
from safetensors.torch import save_file


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def randomize(model, gen, std=0.2):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue  # fixed sin-cos positions
            p.copy_(std * torch.randn(p.shape, generator=gen))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dit", required=True, help="clone of facebookresearch/DiT")
    ap.add_argument("--sit", required=True, help="clone of willisma/SiT")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/fixtures/imagenet"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    kw = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=10, learn_sigma=True)
    fx = {}

    # ---- DiT (ε-prediction, DDPM linear β, learned σ) -------------------------------------------
    sys.path.insert(0, args.dit)
    dit_models = load_module("dit_models", os.path.join(args.dit, "models.py"))
    from diffusion import create_diffusion  # DiT's own package, from the clone

    dit = dit_models.DiT(**kw)
    randomize(dit, gen)
    dit.eval()
    torch.save(dit.state_dict(), f"{out}/dit_tiny.pt")
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, f"{out}/dit_tiny.safetensors")
    x = torch.randn(3, 4, 8, 8, generator=gen)
    y = torch.tensor([1, 7, 10])  # 10 = the null class
    with torch.no_grad():
        fx["dit.x"], fx["dit.y"] = x, y
        fx["dit.t"] = torch.tensor([999.0, 500.0, 17.0])
        fx["dit.out"] = dit(x, fx["dit.t"], y)
        diffusion = create_diffusion("4")  # respaced to 4 steps, as sample.py's DDIM would
        fx["ddpm.alphas_cumprod"] = torch.tensor(create_diffusion("").alphas_cumprod)
        fx["ddim.timesteps"] = torch.tensor(sorted(diffusion.use_timesteps, reverse=True), dtype=torch.float64)
        noise = torch.randn(2, 4, 8, 8, generator=gen)
        labels = torch.tensor([3, 5])
        fx["ddim.noise"], fx["ddim.y"] = noise, labels
        for i, o in enumerate(diffusion.ddim_sample_loop_progressive(dit, noise.shape, noise=noise.clone(), clip_denoised=False, model_kwargs=dict(y=labels), eta=0.0, progress=False)):
            fx[f"ddim.x.{i}"] = o["sample"]
    sys.path.remove(args.dit)
    for m in [k for k in sys.modules if k == "diffusion" or k.startswith("diffusion.")]:
        del sys.modules[m]

    # ---- SiT (velocity on the linear interpolant) -----------------------------------------------
    sys.path.insert(0, args.sit)
    sit_models = load_module("sit_models", os.path.join(args.sit, "models.py"))
    from transport import create_transport, Sampler

    sit = sit_models.SiT(**kw)
    randomize(sit, gen)
    sit.eval()
    torch.save({"ema": sit.state_dict()}, f"{out}/sit_tiny.pt")
    with torch.no_grad():
        fx["sit.t"] = torch.tensor([0.0, 0.37, 0.93])
        fx["sit.out"] = sit(x, fx["sit.t"], y)
        transport = create_transport("Linear", "velocity", None, None, None)
        sample = Sampler(transport).sample_ode(sampling_method="euler", num_steps=5)
        states = sample(noise.clone(), sit.forward, y=labels)
        for i in range(states.shape[0]):
            fx[f"sit.ode.{i}"] = states[i]

    # ---- SD VAE (diffusers AutoencoderKL, SD settings, tiny width) -------------------------------
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=16, scaling_factor=0.18215)
    randomize(vae, gen, std=0.15)
    vae.eval()
    vae.save_pretrained(f"{out}/sd_vae", safe_serialization=True)
    with torch.no_grad():
        z = torch.randn(1, 4, 8, 8, generator=gen)
        fx["vae.z"] = z
        img = vae.decode(z / vae.config.scaling_factor).sample
        fx["vae.image"] = img
        fx["vae.mean"] = vae.encode(img).latent_dist.mean

    save_file({k: (v.float() if v.is_floating_point() else v.to(torch.int64)).contiguous() for k, v in fx.items()}, f"{out}/fixtures.safetensors")
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    tiny_parquet(out)
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()


def tiny_parquet(out):
    """A tiny image dataset in hf-hub's parquet layout (`image` {bytes, path}, `label`), 2 row
    groups, for the parquet route of `prepare_latents` (`tests/latents.rs`)."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        buf = io.BytesIO()
        Image.fromarray((rng.random((20 + i, 24, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
        rows.append({"image": {"bytes": buf.getvalue(), "path": f"{i}.png"}, "label": i % 3})
    pq.write_table(pa.Table.from_pylist(rows), f"{out}/tiny_images.parquet", row_group_size=5)
