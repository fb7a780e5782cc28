#!/usr/bin/env python3
"""Model throughput: FOUND's fast backbone path vs the eager float32 DINO baseline, same run.

Tensor in → mask out on a random-weight ViT-S/8 (same compute as DINO ViT-S/8), at 224² and
320×480, batch 1 and batched; prints ms/img, img/s, the ratio to the baseline, peak memory and
the agreement of the outputs (max |Δ| of attention and keys, mask IoU / differing pixels).

    python benchmarks/bench_inference.py --quick            # a couple of minutes on 2 CPU cores
    python benchmarks/bench_inference.py --device cuda --precision fp32,bf16 --batch-sizes 1,64,256

Same options as ``found bench`` (see ``found bench --help``); the folder benchmark is off here.
"""
from __future__ import annotations

import argparse
import sys

from found.cli.bench import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run_folder=False)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
