"""Which input resolution should the flowers model use? Train it at each size with several
seeds, on the same splits, and compare test accuracy and CPU latency.

    python -m training.resolution_study --data-dir ../shared/datasets \\
        --weights ../shared/datasets/weights/mobilenet_v2_1.0_160_no_top_imagenet_float.h5 \\
        --sizes 160 224 --seeds 42 43 44 --out study.json

One seed's difference is within the test split's noise (550 photos: one photo is 0.18
points); the mean over seeds, beside the latency, is what ``modelspec.flowers.IMAGE_SIZE``
is chosen from. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--out", type=Path, default=Path("resolution_study.json"))
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from training.recipes.base import Profile
    from training.recipes.flowers import FlowersRecipe

    recipe = FlowersRecipe()
    runs = []
    for seed in args.seeds:
        profile = Profile(seed=seed, weights=args.weights)
        data = recipe.load(args.data_dir, profile)
        for size in args.sizes:
            with tempfile.TemporaryDirectory() as scratch:
                fit = recipe.fit(size, data, profile, Path(scratch) / str(size))
                latency = recipe._latency(fit.network.model, Path(scratch) / str(size))
            runs.append(
                {
                    "seed": seed,
                    "image_size": size,
                    "accuracy": fit.metrics["accuracy"],
                    "macro_f1": fit.metrics["macro_f1"],
                    "second_collection": fit.second_collection.get("accuracy"),
                    "latency": latency,
                    "training_seconds": fit.seconds,
                }
            )
            args.out.write_text(json.dumps(runs, indent=2) + "\n")
    print("| size | seeds | test accuracy (mean, min-max) | second collection | ms b1 | ms b32 |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        mine = [r for r in runs if r["image_size"] == size]
        accuracy = [r["accuracy"] for r in mine]
        second = [r["second_collection"] for r in mine if r["second_collection"] is not None]
        b1 = statistics.mean(r["latency"]["batch_1_ms_per_item"] for r in mine)
        b32 = statistics.mean(r["latency"]["batch_32_ms_per_item"] for r in mine)
        print(
            f"| {size} | {len(mine)} | {statistics.mean(accuracy):.4f} ({min(accuracy):.4f}-"
            f"{max(accuracy):.4f}) | {statistics.mean(second) if second else float('nan'):.4f} "
            f"| {b1:.2f} | {b32:.2f} |"
        )
    print(f"runs: {args.out}")


if __name__ == "__main__":
    main()
