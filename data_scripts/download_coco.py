"""Download COCO 2017 (train/val images and instance annotations) into ROOT.

    python data_scripts/download_coco.py --root ~/.cache/fcos_from_scratch --parts val,annotations
    python data_scripts/download_coco.py --source-dir /media/usb   # archives already at hand

Gives ``ROOT/train2017/``, ``ROOT/val2017/`` and ``ROOT/annotations/instances_*.json``
(train2017.zip alone is 18 GB). Downloads resume, MD5s are checked, and offline the
script says what to do instead (the embedded ``digits`` dataset needs no download).
"""

import argparse
import sys

from fcos_from_scratch.data.download import DownloadError, fetch_all
from fcos_from_scratch.data.registry import default_data_root

COCO_ARCHIVES = {
    "annotations": ("http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
                    "annotations_trainval2017.zip", "f4bbac642086de4f52a3fdda2de5fa2c"),
    "val": ("http://images.cocodataset.org/zips/val2017.zip", "val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80"),
    "train": ("http://images.cocodataset.org/zips/train2017.zip", "train2017.zip",
              "cced6f7f71b7629ddf16f17bbcfab6b2"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(default_data_root()), help="data folder (default: %(default)s)")
    parser.add_argument("--parts", default=",".join(COCO_ARCHIVES), help="comma-separated subset of %(default)s")
    parser.add_argument("--source-dir", default=None, help="take the archives from this folder instead of the web")
    parser.add_argument("--delete-archives", action="store_true", help="remove the .zip files after extracting")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in COCO_ARCHIVES]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {list(COCO_ARCHIVES)}")
    try:
        fetch_all([COCO_ARCHIVES[p] for p in parts], args.root, not args.delete_archives, args.source_dir, args.quiet)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"COCO ready in {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
