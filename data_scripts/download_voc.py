"""Download PASCAL VOC 2007 (trainval + test) and 2012 (trainval) into ROOT/VOCdevkit.

    python data_scripts/download_voc.py --root ~/.cache/fcos_from_scratch
    python data_scripts/download_voc.py --source-dir /media/usb   # archives already at hand

About 2.8 GB of tar files. Downloads resume where they stopped, every archive's MD5
is checked, and without a network connection the script says what to do instead
(the embedded ``digits`` dataset needs no download). Afterwards
``build_dataset("voc", "train")`` trains on 07+12 trainval and ``"test"`` is 07 test.
"""

import argparse
import sys

from fcos_from_scratch.data.download import DownloadError, fetch_all
from fcos_from_scratch.data.registry import default_data_root

# (url, file name, md5): the checksums torchvision's VOC dataset also uses.
VOC_ARCHIVES = {
    "2007-trainval": ("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
                      "VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64"),
    "2007-test": ("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
                  "VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f"),
    "2012-trainval": ("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
                      "VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(default_data_root()), help="data folder (default: %(default)s)")
    parser.add_argument("--parts", default=",".join(VOC_ARCHIVES), help="comma-separated subset of %(default)s")
    parser.add_argument("--source-dir", default=None, help="take the archives from this folder instead of the web")
    parser.add_argument("--delete-archives", action="store_true", help="remove the .tar files after extracting")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in VOC_ARCHIVES]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {list(VOC_ARCHIVES)}")
    try:
        fetch_all([VOC_ARCHIVES[p] for p in parts], args.root, not args.delete_archives, args.source_dir, args.quiet)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"VOC ready in {args.root}/VOCdevkit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
