"""Write a VOC split as a COCO json (boxes in our continuous convention, difficult flagged).

    python data_scripts/voc_to_coco.py --root ~/.cache/fcos_from_scratch --sets 2007:test --out voc07_test.json

``bbox`` is ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`` (see
``fcos_from_scratch/data/voc.py``), category ids are 1..20 in the devkit's class
order, and difficult objects carry ``"difficult": 1, "ignore": 1``.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from fcos_from_scratch.data.registry import default_data_root
from fcos_from_scratch.data.voc import VOCDetection


def parse_sets(text: str):
    pairs = []
    for item in text.split(","):
        year, _, split = item.partition(":")
        if not year or not split:
            raise ValueError(f"--sets entries look like 2007:test, got {item!r}")
        pairs.append((year, split))
    return tuple(pairs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(default_data_root()), help="folder holding VOCdevkit/")
    parser.add_argument("--sets", default="2007:test", help="comma-separated YEAR:SET pairs (default: %(default)s)")
    parser.add_argument("--out", required=True, help="json file to write")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad images instead of stopping")
    args = parser.parse_args(argv)
    dataset = VOCDetection(args.root, parse_sets(args.sets), skip_bad=args.skip_bad, keep_difficult=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(dataset.coco_gt()))
    os.replace(tmp, out)
    print(f"wrote {out}: {dataset.report.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
