"""Reference fixtures of the SD3 pipeline, made with diffusers' and transformers' own classes.

Run once by a developer (not by CI); the outputs are committed under `tests/fixtures/sd3/` so the
Rust parity tests (`tests/sd3.rs`) need no Python:

    pip install torch diffusers transformers tokenizers safetensors
    python benches/reference/sd3_reference.py            # writes tests/fixtures/sd3/

What it builds (all random weights, seed 0, f32, CPU):
- a tiny SD3 pipeline: `SD3Transformer2DModel` (2 joint blocks), two `CLIPTextModelWithProjection`
  (CLIP-L: quick-GELU; CLIP-G: GELU), `T5EncoderModel` (gated-GELU, relative position bias),
  `AutoencoderKL` with SD3's settings (16 latent channels, 4 levels, no quant convs, scaling
  1.5305, shift 0.0609), `FlowMatchEulerDiscreteScheduler(shift=3)`, and tiny tokenizers in the
  real tokenizers' formats (CLIP byte-level BPE with <|startoftext|>/<|endoftext|>; CLIP-G pads
  with "!", CLIP-L with <|endoftext|>; a T5-style unigram with </s> appended, <pad> = 0);
- saved in the diffusers folder layout (`diffusers/`) and as one SD3 single file
  (`sd3_tiny.safetensors`, keys `model.diffusion_model.*`, `text_encoders.{clip_l,clip_g,t5xxl}.*`,
  `first_stage_model.*`), the single file checked here against diffusers' own single-file
  converters (`convert_sd3_transformer_checkpoint_to_diffusers`, `convert_ldm_vae_checkpoint`);
- two more transformers for the model tests: QK RMS-norm (SD3.5-large) and MMDiT-X
  (`dual_attention_layers=(0,)`, SD3.5-medium), with one forward each on fixed inputs;
- `fixtures.safetensors`: token ids, each encoder's penultimate and pooled outputs, T5's last
  state, `prompt_embeds`/`pooled_prompt_embeds` of the prompt and of the empty prompt (from
  `pipe.encode_prompt`), the σ grid, the noise, the latents after every step of a 4-step CFG run
  (`callback_on_step_end`), the decoded image and a VAE encode of it (the distribution's mean).
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file, load_file

from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, convert_sd3_transformer_checkpoint_to_diffusers
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizerFast, PreTrainedTokenizerFast, T5Config, T5EncoderModel
from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders

PROMPT = "a red apple on a wooden table, studio light"
STEPS = 4
GUIDANCE = 5.0
MAX_SEQ = 16  # T5 tokens (diffusers' max_sequence_length; 256 by default)
HW = 128  # image side; latent 16 × 16


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def clip_tokenizer(pad):
    """CLIP's vocabulary layout on a tiny merge list: 256 byte symbols, the same with </w>, merges, then
    <|startoftext|>, <|endoftext|> (the highest id, as in CLIP)."""
    chars = bytes_to_unicode()
    vocab = chars + [c + "</w>" for c in chars]
    merges = []
    for word in ["red", "apple", "on", "wooden", "table", "studio", "light", "cat"]:
        cur = word[0]
        for i, ch in enumerate(word[1:], 1):
            nxt = ch + ("</w>" if i == len(word) - 1 else "")
            merges.append(f"{cur} {nxt}")
            cur = cur + nxt
            if cur not in vocab:
                vocab.append(cur)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, merges=[tuple(m.split(" ")) for m in dict.fromkeys(merges)], pad_token=pad, model_max_length=77)
    return tok, len(vocab)


def t5_tokenizer():
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz,."]
    pieces += [("▁" + w, -3.0) for w in ["a", "red", "apple", "on", "wooden", "table", "studio", "light", "cat"]]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    t = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512)
    return t, len(pieces)


def tiny_transformer(**kw):
    cfg = dict(
        sample_size=HW // 8,
        patch_size=2,
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=24,
        out_channels=16,
        pos_embed_max_size=12,
    )
    cfg.update(kw)
    return SD3Transformer2DModel(**cfg)


def randomize(module, gen, std=0.3):
    """Random weights everywhere (diffusers zero-initialises some; parity needs every path live)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name and name.endswith("weight") and p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))


# ---- single-file layout (SD3 / LDM names) --------------------------------------------------------


def transformer_to_single_file(sd, num_layers, dual):
    """diffusers SD3Transformer2DModel keys → `model.diffusion_model.*` (the inverse of diffusers'
    convert_sd3_transformer_checkpoint_to_diffusers; checked against it below)."""
    out = {}
    P = "model.diffusion_model."

    def put(k, v):
        out[P + k] = v.contiguous()

    def swap(w):
        a, b = w.chunk(2, 0)
        return torch.cat([b, a], 0)

    put("pos_embed", sd["pos_embed.pos_embed"])
    for s, d in [("x_embedder.proj", "pos_embed.proj"), ("context_embedder", "context_embedder"), ("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1"),
                 ("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2"), ("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
                 ("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"), ("final_layer.linear", "proj_out")]:
        for t in ["weight", "bias"]:
            put(f"{s}.{t}", sd[f"{d}.{t}"])
    for t in ["weight", "bias"]:
        put(f"final_layer.adaLN_modulation.1.{t}", swap(sd[f"norm_out.linear.{t}"]))
    for i in range(num_layers):
        b, j = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        last = i == num_layers - 1
        for t in ["weight", "bias"]:
            put(f"{j}x_block.attn.qkv.{t}", torch.cat([sd[f"{b}attn.to_q.{t}"], sd[f"{b}attn.to_k.{t}"], sd[f"{b}attn.to_v.{t}"]]))
            put(f"{j}context_block.attn.qkv.{t}", torch.cat([sd[f"{b}attn.add_q_proj.{t}"], sd[f"{b}attn.add_k_proj.{t}"], sd[f"{b}attn.add_v_proj.{t}"]]))
            put(f"{j}x_block.attn.proj.{t}", sd[f"{b}attn.to_out.0.{t}"])
            put(f"{j}x_block.adaLN_modulation.1.{t}", sd[f"{b}norm1.linear.{t}"])
            ctx = sd[f"{b}norm1_context.linear.{t}"]
            put(f"{j}context_block.adaLN_modulation.1.{t}", swap(ctx) if last else ctx)
            put(f"{j}x_block.mlp.fc1.{t}", sd[f"{b}ff.net.0.proj.{t}"])
            put(f"{j}x_block.mlp.fc2.{t}", sd[f"{b}ff.net.2.{t}"])
            if not last:
                put(f"{j}context_block.attn.proj.{t}", sd[f"{b}attn.to_add_out.{t}"])
                put(f"{j}context_block.mlp.fc1.{t}", sd[f"{b}ff_context.net.0.proj.{t}"])
                put(f"{j}context_block.mlp.fc2.{t}", sd[f"{b}ff_context.net.2.{t}"])
            if i in dual:
                put(f"{j}x_block.attn2.qkv.{t}", torch.cat([sd[f"{b}attn2.to_q.{t}"], sd[f"{b}attn2.to_k.{t}"], sd[f"{b}attn2.to_v.{t}"]]))
                put(f"{j}x_block.attn2.proj.{t}", sd[f"{b}attn2.to_out.0.{t}"])
        for s, d in [("x_block.attn.ln_q", "attn.norm_q"), ("x_block.attn.ln_k", "attn.norm_k"), ("context_block.attn.ln_q", "attn.norm_added_q"),
                     ("context_block.attn.ln_k", "attn.norm_added_k"), ("x_block.attn2.ln_q", "attn2.norm_q"), ("x_block.attn2.ln_k", "attn2.norm_k")]:
            if f"{b}{d}.weight" in sd:
                put(f"{j}{s}.weight", sd[f"{b}{d}.weight"])
    return out


def vae_to_ldm(sd):
    """diffusers AutoencoderKL keys → LDM `first_stage_model.*` (inverse of convert_ldm_vae_checkpoint)."""
    out = {}
    for k, v in sd.items():
        n = k
        for a, b in [("down_blocks.", "down."), ("up_blocks.", "up."), ("mid_block.resnets.0", "mid.block_1"), ("mid_block.resnets.1", "mid.block_2"),
                     ("mid_block.attentions.0", "mid.attn_1"), ("conv_norm_out", "norm_out"), ("conv_shortcut", "nin_shortcut"),
                     ("downsamplers.0", "downsample"), ("upsamplers.0", "upsample"), ("resnets.", "block."),
                     ("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]:
            n = n.replace(a, b)
        if n.startswith("decoder.up."):  # LDM counts decoder levels from the lowest resolution
            parts = n.split(".")
            parts[2] = str(3 - int(parts[2]))
            n = ".".join(parts)
        if ".attn_1." in n and v.dim() == 2:
            v = v[:, :, None, None]  # LDM stores attention projections as 1×1 convs
        out["first_stage_model." + n] = v.contiguous()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "../../tests/fixtures/sd3"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    tok_l, vocab = clip_tokenizer("<|endoftext|>")
    tok_g, _ = clip_tokenizer("!")
    tok_t5, t5_vocab = t5_tokenizer()
    eos = tok_l.convert_tokens_to_ids("<|endoftext|>")
    bos = tok_l.convert_tokens_to_ids("<|startoftext|>")
    clip_l = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=vocab, hidden_size=8, intermediate_size=16, num_hidden_layers=3, num_attention_heads=2,
                                                        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=8, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos))
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                                                        max_position_embeddings=77, hidden_act="gelu", projection_dim=16, bos_token_id=bos, eos_token_id=eos, pad_token_id=0))
    t5 = T5EncoderModel(T5Config(vocab_size=t5_vocab, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=32,
                                 relative_attention_max_distance=128, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False))
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=16, norm_num_groups=4, sample_size=HW,
                        scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
    transformer = tiny_transformer()
    for m in [clip_l, clip_g, t5, transformer]:
        randomize(m, gen)
    randomize(vae, gen, std=0.15)
    for m in [clip_l, clip_g, t5, vae, transformer]:
        m.eval()
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=sched, vae=vae, text_encoder=clip_l, tokenizer=tok_l, text_encoder_2=clip_g,
                                    tokenizer_2=tok_g, text_encoder_3=t5, tokenizer_3=tok_t5)
    pipe.save_pretrained(f"{out}/diffusers", safe_serialization=True)

    # ---- single file, checked against diffusers' own converters -----------------------------------
    tsd = transformer.state_dict()
    single = transformer_to_single_file(tsd, 2, ())
    back = convert_sd3_transformer_checkpoint_to_diffusers(dict(single))
    assert set(back) == set(tsd), set(back) ^ set(tsd)
    assert all(torch.equal(back[k], tsd[k]) for k in tsd), "transformer single-file round trip"
    vsd = vae.state_dict()
    ldm = vae_to_ldm(vsd)
    vback = convert_ldm_vae_checkpoint(dict(ldm), dict(vae.config))
    assert set(vback) == set(vsd), set(vback) ^ set(vsd)
    assert all(torch.equal(vback[k].reshape(vsd[k].shape), vsd[k]) for k in vsd), "VAE single-file round trip"
    single.update(ldm)
    for name, m in [("clip_l", clip_l), ("clip_g", clip_g)]:
        for k, v in m.state_dict().items():
            if name == "clip_l" and k == "text_projection.weight":
                continue  # SD3's single files carry no CLIP-L projection (diffusers uses the identity)
            key = f"text_encoders.{name}.transformer.{k}"
            single[key] = v.contiguous()
    with torch.no_grad():  # the single file's CLIP-L projection is the identity: make the pipeline's the same
        clip_l.text_projection.weight.copy_(torch.eye(8))
    clip_l.save_pretrained(f"{out}/diffusers/text_encoder", safe_serialization=True)
    for k, v in t5.state_dict().items():
        single[f"text_encoders.t5xxl.transformer.{k}"] = v.contiguous().clone()
    save_file(single, f"{out}/sd3_tiny.safetensors")

    # ---- fixtures ----------------------------------------------------------------------------------
    fx = {}
    with torch.no_grad():
        for tag, text in [("prompt", PROMPT), ("empty", "")]:
            ids_l = tok_l(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            ids_g = tok_g(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            ids_t5 = tok_t5(text, padding="max_length", max_length=MAX_SEQ, truncation=True, add_special_tokens=True, return_tensors="pt").input_ids
            fx[f"{tag}.clip_l_ids"], fx[f"{tag}.clip_g_ids"], fx[f"{tag}.t5_ids"] = ids_l, ids_g, ids_t5
            for name, enc, ids in [("clip_l", clip_l, ids_l), ("clip_g", clip_g, ids_g)]:
                o = enc(ids, output_hidden_states=True)
                fx[f"{tag}.{name}_penultimate"] = o.hidden_states[-2]
                fx[f"{tag}.{name}_pooled"] = o.text_embeds
            fx[f"{tag}.t5_last"] = t5(ids_t5)[0]
        long_prompt = " ".join(["red apple"] * 60)
        fx["long.clip_l_ids"] = tok_l(long_prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        fx["long.t5_ids"] = tok_t5(long_prompt, padding="max_length", max_length=MAX_SEQ, truncation=True, return_tensors="pt").input_ids
        pe, npe, ppe, nppe = pipe.encode_prompt(prompt=PROMPT, prompt_2=None, prompt_3=None, do_classifier_free_guidance=True, negative_prompt="", max_sequence_length=MAX_SEQ)
        fx["prompt_embeds"], fx["negative_prompt_embeds"], fx["pooled_prompt_embeds"], fx["negative_pooled_prompt_embeds"] = pe, npe, ppe, nppe

        # transformer: one forward on fixed inputs (SD3 convention: timestep = 1000·σ, output ≈ ε − x₀)
        x = torch.randn(2, 16, HW // 8, HW // 8, generator=gen)
        ctx = torch.randn(2, 7, 32, generator=gen)
        y = torch.randn(2, 24, generator=gen)
        ts = torch.tensor([1000.0, 371.5])
        fx["dit.x"], fx["dit.context"], fx["dit.y"], fx["dit.timestep"] = x, ctx, y, ts
        fx["dit.out"] = transformer(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=y, timestep=ts).sample
        for tag, kw in [("qknorm", dict(qk_norm="rms_norm")), ("mmditx", dict(qk_norm="rms_norm", dual_attention_layers=(0,)))]:
            m = tiny_transformer(**kw)
            randomize(m, gen)
            m.eval()
            fx[f"{tag}.out"] = m(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=y, timestep=ts).sample
            save_file({k: v.contiguous() for k, v in transformer_to_single_file(m.state_dict(), 2, kw.get("dual_attention_layers", ())).items()},
                      f"{out}/transformer_{tag}.safetensors")
            with open(f"{out}/transformer_{tag}.json", "w") as f:
                json.dump({k: (list(v) if isinstance(v, tuple) else v) for k, v in m.config.items() if not k.startswith("_")}, f, indent=1)

        # 4-step CFG from fixed noise, latents after every step
        sched.set_timesteps(STEPS)
        fx["sigmas"] = sched.sigmas.clone().float()
        fx["timesteps"] = sched.timesteps.clone().float()
        noise = torch.randn(1, 16, HW // 8, HW // 8, generator=gen)
        fx["noise"] = noise
        steps = []

        def record(p, i, t, kw):
            steps.append(kw["latents"].clone())
            return kw

        lat = pipe(prompt=PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=noise.clone(), height=HW, width=HW,
                   max_sequence_length=MAX_SEQ, output_type="latent", callback_on_step_end=record).images
        for i, s in enumerate(steps):
            fx[f"latents.{i}"] = s
        img = vae.decode(lat / vae.config.scaling_factor + vae.config.shift_factor).sample
        fx["image"] = img
        fx["image_latent_mean"] = vae.encode(img).latent_dist.mean

    save_file({k: v.contiguous().float() if v.is_floating_point() else v.contiguous().to(torch.int64) for k, v in fx.items()}, f"{out}/fixtures.safetensors")
    meta = dict(prompt=PROMPT, steps=STEPS, guidance_scale=GUIDANCE, max_sequence_length=MAX_SEQ, height=HW, width=HW, shift=3.0,
                torch=torch.__version__, diffusers=__import__("diffusers").__version__, transformers=__import__("transformers").__version__)
    with open(f"{out}/fixtures.json", "w") as f:
        json.dump(meta, f, indent=1)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
