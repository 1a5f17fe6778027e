"""Generate (or check) the embedded digits dataset's cache.

    python data_scripts/make_digits.py                      # default splits, default root
    python data_scripts/make_digits.py --root data --num-train 500 --seed 1

Training generates the splits on first use anyway; this script does it ahead of
time and prints what it made. A cache that is complete, undamaged (every image
present, of the size it was written with, a whole JPEG) and made by the same
generator version and settings is left as it is; a damaged one is named and
rebuilt; ``--force`` rebuilds it in any case.

    python data_scripts/make_digits.py --force             # regenerate every split
"""

import argparse
import sys
import time

from pathlib import Path

from fcos_from_scratch.data.digits import SPLITS, DigitsConfig, DigitsDetection, cache_problem
from fcos_from_scratch.data.registry import default_data_root


def main(argv=None) -> int:
    defaults = DigitsConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(default_data_root()), help="data folder (default: %(default)s)")
    parser.add_argument("--splits", default=",".join(SPLITS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="regenerate even a sound cache")
    for name in ("num_train", "num_val", "num_test", "seed", "min_side", "max_side", "max_digits"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    args = parser.parse_args(argv)
    config = DigitsConfig(num_train=args.num_train, num_val=args.num_val, num_test=args.num_test,
                          seed=args.seed, min_side=args.min_side, max_side=args.max_side,
                          max_digits=args.max_digits)
    splits = [s for s in args.splits.split(",") if s]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        parser.error(f"--splits: unknown split(s) {', '.join(unknown)}; expected some of {', '.join(SPLITS)}")
    for split in splits:
        start = time.time()
        problem = cache_problem(Path(args.root).expanduser() / "digits" / split, config, split)
        state = "rebuilt (--force)" if args.force else "cache is sound" if problem is None else \
            "generated" if problem == "missing" else f"rebuilt ({problem})"
        dataset = DigitsDetection(args.root, split, config, force=args.force)
        boxes = sum(len(r["target"]["boxes"]) for r in dataset.records)
        print(f"digits {split}: {len(dataset)} images, {boxes} digits in "
              f"{dataset.ann_file.parent}, {state} ({time.time() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
