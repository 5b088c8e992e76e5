#!/usr/bin/env python3
"""Copies the figures the chapter examples wrote under results/ into chapters/figures/, following
the book's own pairs

    ![caption](figures/ch02_data.png)
    <!-- notebook: results/ch02/data.png -->

so that a regenerated figure lands where the chapter shows it (the same pairs drive the
notebooks, scripts/notebooks.py). Run the examples first (scripts/regenerate_book.sh does both).

    python3 scripts/book_figures.py            # copy every figure whose result exists; list the rest
    python3 scripts/book_figures.py --check    # exit 1 if a figure's result is missing or differs
"""
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAIR = re.compile(r"!\[[^\]]*\]\((figures/[^)]+)\)\s*\n<!-- notebook: ([^ ]+) -->")


def pairs():
    for md in sorted((ROOT / "chapters").glob("*.md")):
        for shown, result in PAIR.findall(md.read_text()):
            yield md.name, ROOT / "chapters" / shown, ROOT / result


def main():
    check = "--check" in sys.argv[1:]
    missing, stale, copied = [], [], 0
    for chapter, shown, result in pairs():
        if not result.exists():
            missing.append(f"{chapter}: {result.relative_to(ROOT)} (run its example)")
            continue
        same = shown.exists() and shown.read_bytes() == result.read_bytes()
        if check:
            if not same:
                stale.append(f"{chapter}: {shown.relative_to(ROOT)} differs from {result.relative_to(ROOT)}")
        elif not same:
            shutil.copyfile(result, shown)
            copied += 1
    for line in missing + stale:
        print(line)
    if not check:
        print(f"copied {copied} figure(s) into chapters/figures/; {len(missing)} without a result")
    sys.exit(1 if check and (missing or stale) else 0)


if __name__ == "__main__":
    main()
