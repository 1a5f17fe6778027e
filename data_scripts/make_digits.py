"""Generate (or check) the embedded digits dataset's cache.

    python data_scripts/make_digits.py                      # default splits, default root
    python data_scripts/make_digits.py --root data --num-train 500 --seed 1

Training generates the splits on first use anyway; this script does it ahead of
time and prints what it made. A cache that is complete and was made by the same
generator version and settings is left as it is.
"""

import argparse
import sys
import time

from fcos_from_scratch.data.digits import SPLITS, DigitsConfig, DigitsDetection
from fcos_from_scratch.data.registry import default_data_root


def main(argv=None) -> int:
    defaults = DigitsConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(default_data_root()), help="data folder (default: %(default)s)")
    parser.add_argument("--splits", default=",".join(SPLITS))
    for name in ("num_train", "num_val", "num_test", "seed", "min_side", "max_side", "max_digits"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    args = parser.parse_args(argv)
    config = DigitsConfig(num_train=args.num_train, num_val=args.num_val, num_test=args.num_test,
                          seed=args.seed, min_side=args.min_side, max_side=args.max_side,
                          max_digits=args.max_digits)
    for split in [s for s in args.splits.split(",") if s]:
        start = time.time()
        dataset = DigitsDetection(args.root, split, config)
        boxes = sum(len(r["target"]["boxes"]) for r in dataset.records)
        print(f"digits {split}: {len(dataset)} images, {boxes} digits in "
              f"{dataset.ann_file.parent} ({time.time() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
