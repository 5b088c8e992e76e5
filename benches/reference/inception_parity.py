"""Parity data for `erg::features::inception::FidInception` against pytorch-fid's network.

Builds pytorch-fid's FID Inception-v3 (torchvision Inception3 with FIDInceptionA/C/E_1/E_2 blocks)
with random weights (random BatchNorm statistics too, so folding BN is exercised), writes them as
safetensors with pytorch-fid's key names, plus two input images in [-1, 1] and their pool3
features computed the way pytorch-fid does (bilinear resize to 299, no further normalisation).
Then run the ignored Rust test:

    pip install torch torchvision pytorch-fid safetensors numpy
    python benches/reference/inception_parity.py /tmp/inception-parity
    ERG_INCEPTION_PARITY=/tmp/inception-parity cargo test --release --test pretrained -- --ignored
"""
import os
import sys

import torch
import torch.nn.functional as F
from pytorch_fid import inception as I
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/inception-parity"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
m = I._inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
m.Mixed_5b = I.FIDInceptionA(192, pool_features=32)
m.Mixed_5c = I.FIDInceptionA(256, pool_features=64)
m.Mixed_5d = I.FIDInceptionA(288, pool_features=64)
m.Mixed_6b = I.FIDInceptionC(768, channels_7x7=128)
m.Mixed_6c = I.FIDInceptionC(768, channels_7x7=160)
m.Mixed_6d = I.FIDInceptionC(768, channels_7x7=160)
m.Mixed_6e = I.FIDInceptionC(768, channels_7x7=192)
m.Mixed_7b = I.FIDInceptionE_1(1280)
m.Mixed_7c = I.FIDInceptionE_2(2048)
g = torch.Generator().manual_seed(1)
with torch.no_grad():
    for k, v in m.state_dict().items():
        if k.endswith("running_var") or k.endswith("bn.weight"):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
        elif k.endswith("running_mean") or k.endswith("bn.bias"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
m.eval()
sd = {k: v.contiguous() for k, v in m.state_dict().items() if "num_batches_tracked" not in k}
save_file(sd, f"{out}/weights.safetensors")
x = torch.tanh(torch.randn(2, 3, 32, 32, generator=g))
with torch.no_grad():
    h = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"]:
        h = getattr(m, name)(h)
    h = F.max_pool2d(h, 3, 2)
    for name in ["Conv2d_3b_1x1", "Conv2d_4a_3x3"]:
        h = getattr(m, name)(h)
    h = F.max_pool2d(h, 3, 2)
    for name in ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]:
        h = getattr(m, name)(h)
    f = h.mean((2, 3))
save_file({"images": x.contiguous(), "features": f.contiguous()}, f"{out}/io.safetensors")
print(f"wrote {out}: features {tuple(f.shape)}, mean {f.mean():.4f}")
