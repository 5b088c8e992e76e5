#!/usr/bin/env python3
"""Generates one evcxr Jupyter notebook per book chapter backed by an `examples/chNN_*.rs` example.

Never edit `notebooks/*.ipynb` by hand: edit the chapter or the example and rerun

    python3 scripts/notebooks.py            # write notebooks/
    python3 scripts/notebooks.py --check    # CI: fail if notebooks/ is out of date

Each notebook: a `:dep` cell (this crate by path, and the crates the example uses), a cell that
moves to the repository root (so paths are those of `cargo run --example`), the example's `use`
lines and its `helpers` anchor, then the chapter's prose as markdown cells and each
`{{#include ../examples/X.rs:anchor}}` block as a code cell holding that anchor's code, as mdBook
expands it. An image followed by `<!-- notebook: path.png -->` becomes a cell that displays the
file the code just wrote (`erg::imaging::Figure`, evcxr's display protocol).
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
OUT = ROOT / "notebooks"
INCLUDE = re.compile(r"```rust[^\n]*\n\{\{#include \.\./examples/([\w]+)\.rs:([\w]+)\}\}\n```")
IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)\s*\n<!-- notebook: ([^ ]+) -->")
# Crates an example may use besides erg, as evcxr `:dep` lines (versions as in Cargo.toml).
DEPS = {"plotters": '{ version = "0.3.7", default-features = false, features = ["bitmap_backend", "bitmap_encoder", "svg_backend", "line_series", "ab_glyph"] }',
        "serde_json": '"1"', "anyhow": '"1"'}
# Always declared: evcxr must name the type of every variable a cell keeps (a candle `Device` or
# `Tensor`, an `image` buffer returned by erg's imaging), so their crates are dependencies too.
ALWAYS = [':dep candle_core = { package = "candle-core", version = "0.11.1" }',
          ':dep image = { version = "0.25", default-features = false, features = ["png", "jpeg"] }']


def anchor(src: str, name: str) -> str:
    m = re.search(rf"// ANCHOR: {name}\n(.*?)\n\s*// ANCHOR_END: {name}", src, re.S)
    if not m:
        raise SystemExit(f"anchor {name!r} not found")
    lines = [l for l in m.group(1).split("\n") if "ANCHOR" not in l]
    indent = min((len(l) - len(l.lstrip()) for l in lines if l.strip()), default=0)
    return "\n".join(l[indent:] for l in lines)


def cell(kind: str, text: str) -> dict:
    c = {"cell_type": kind, "metadata": {}, "source": text.strip("\n").splitlines(keepends=True)}
    if kind == "code":
        c.update(execution_count=None, outputs=[])
    return c


def notebook(chapter: Path, example: Path) -> dict:
    src = example.read_text()
    uses = [l for l in src.splitlines() if l.startswith("use ")]
    # Optimised code (candle in a debug build is ~70x slower); evcxr applies it to every crate.
    deps = [":opt 2", ':dep erg = { path = ".." }']
    for crate, spec in DEPS.items():
        if spec and any(u.startswith(f"use {crate}") for u in uses) or (spec and f"{crate}::" in src):
            deps.append(f":dep {crate} = {spec}")
    deps += ALWAYS
    cells = [cell("code", "\n".join(deps)), cell("code", 'std::env::set_current_dir("..").unwrap(); // the repository root, as `cargo run --example`')]
    head = "\n".join(uses)
    if "// ANCHOR: helpers" in src:
        head += "\n\n" + anchor(src, "helpers")
    cells.append(cell("code", head))
    text = IMAGE.sub(lambda m: f"\x00img {m.group(1)}\x00", chapter.read_text())
    pos = 0
    for m in INCLUDE.finditer(text):
        emit_markdown(cells, text[pos:m.start()])
        if m.group(1) != example.stem:
            raise SystemExit(f"{chapter.name} includes {m.group(1)}.rs; a chapter's code comes from its own example {example.name}")
        cells.append(cell("code", anchor(src, m.group(2))))
        pos = m.end()
    emit_markdown(cells, text[pos:])
    for i, c in enumerate(cells):  # nbformat 4.5 wants stable cell ids
        c["id"] = f"{example.stem}-{i}"
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "Rust", "language": "rust", "name": "rust"},
                                         "language_info": {"name": "Rust", "file_extension": ".rs", "mimetype": "text/rust"}},
            "nbformat": 4, "nbformat_minor": 5}


def emit_markdown(cells: list, text: str) -> None:
    for i, part in enumerate(text.split("\x00")):
        if i % 2 == 1:  # an image marker
            cells.append(cell("code", f'erg::imaging::Figure::open("{part[4:]}")?'))
        elif part.strip():
            cells.append(cell("markdown", part))


def main() -> int:
    check = "--check" in sys.argv
    wanted = {}
    for chapter in sorted(CHAPTERS.glob("ch[0-9][0-9]_*.md")):
        example = ROOT / "examples" / f"{chapter.stem}.rs"
        if example.exists():
            wanted[OUT / f"{chapter.stem}.ipynb"] = json.dumps(notebook(chapter, example), indent=1, ensure_ascii=False) + "\n"
    stale = [p for p, t in wanted.items() if not p.exists() or p.read_text() != t]
    extra = [p for p in OUT.glob("*.ipynb") if p not in wanted]
    if check:
        for p in stale + extra:
            print(f"out of date: {p.relative_to(ROOT)} (run python3 scripts/notebooks.py)")
        return 1 if stale or extra else 0
    OUT.mkdir(exist_ok=True)
    for p in stale:
        p.write_text(wanted[p])
        print(f"wrote {p.relative_to(ROOT)}")
    for p in extra:
        p.unlink()
        print(f"removed {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
