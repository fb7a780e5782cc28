#!/usr/bin/env python3
"""Folder throughput: JPEG files in → PNG masks out, through the engine ``found segment`` runs.

Generates temporary folders of JPEGs (224² and 320×480 by default), then runs the engine and the
mask writer of ``found segment`` (:func:`found.bench.segment_folder`: decoding in worker
threads, same-size batches, PNG writing behind the model, fast backbone) and, in the same run, the
same engine with the eager float32 backbone and no threads. Prints img/s, the ratio, peak memory
(CPU) and whether both wrote identical masks.

    python benchmarks/bench_folder.py --quick
    python benchmarks/bench_folder.py --device cuda --folder-images 1000 --batch-sizes 64 --precision bf16

Same options as ``found bench``; the model benchmark is off here.
"""
from __future__ import annotations

import argparse
import sys

from found.cli.bench import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run_model=False)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
