"""``python -m assignments list|start|test|grade|solution|gradescope`` (see assignments/README.md)."""

import argparse
import json
import shutil
import sys
import zipfile
from pathlib import Path

from .codegen import solution_source, starter_source
from .units import UNITS

HERE = Path(__file__).resolve().parent
STARTERS = HERE / "starters"


def _unit(name):
    if name not in UNITS:
        raise SystemExit(f"unknown unit {name!r}; units: {', '.join(UNITS)}")
    return UNITS[name]


def cmd_list(args):
    for unit in UNITS.values():
        points = unit.max_points()
        names = ", ".join(i.name for i in unit.items)
        print(f"{unit.name:18s} {points:5g} pts  {unit.file:22s} {names}")


def walkthrough_text(unit):
    names = "\n".join(f"- `{i.name}` (library: `{i.module}`)" for i in unit.items)
    return (f"# {unit.title}\n\nWrite these in `{unit.file}`; their signatures and docstrings are the "
            f"library's, verbatim:\n\n{names}\n\n## Walkthrough\n\n{unit.walkthrough}\n"
            f"## Check your work\n\n```bash\npython -m assignments test {unit.name} --submission .\n```\n\n"
            "Public cases run here; hidden cases (seeded generators and edge-case families) are graded "
            "after the due date.\n")


def cmd_start(args):
    unit = _unit(args.unit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / unit.file).write_text(starter_source(unit))
    (out / "WALKTHROUGH.md").write_text(walkthrough_text(unit))
    print(f"wrote {out / unit.file} and {out / 'WALKTHROUGH.md'}")


def cmd_solution(args):
    unit = _unit(args.unit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / unit.file).write_text(solution_source(unit))
    print(f"wrote {out / unit.file}")


def cmd_grade(args, tiers=("public", "hidden")):
    from .grader import format_table, grade

    unit = _unit(args.unit)
    results = grade(unit, Path(args.submission), getattr(args, "results", None),
                    getattr(args, "seeds", None), tiers=tiers, name=getattr(args, "name", None),
                    leaderboard_path=getattr(args, "leaderboard", None))
    print(format_table(results))
    print(results["output"])
    return results


def cmd_test(args):
    results = cmd_grade(args, tiers=("public",))
    if any(t["score"] < t["max_score"] for t in results["tests"]):
        for test in results["tests"]:
            if test["score"] < test["max_score"]:
                print(f"\n{test['name']}:\n{test['output']}")
        raise SystemExit(1)


def cmd_gradescope(args):
    from .gradescope import build_zip

    build_zip(_unit(args.unit), Path(args.out), Path(args.seeds) if args.seeds else None)
    print(f"wrote {args.out}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m assignments", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the units and their points").set_defaults(func=cmd_list)
    for name, func, helptext in (("start", cmd_start, "write the starter and the walkthrough"),
                                 ("solution", cmd_solution, "write the library's code as a submission")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("unit")
        p.add_argument("--out", required=True)
        p.set_defaults(func=func)
    p = sub.add_parser("test", help="run the public cases (fast feedback)")
    p.add_argument("unit")
    p.add_argument("--submission", required=True)
    p.set_defaults(func=cmd_test)
    p = sub.add_parser("grade", help="grade as Gradescope does and write results.json")
    p.add_argument("unit")
    p.add_argument("--submission", required=True)
    p.add_argument("--results", type=Path, default=None)
    p.add_argument("--seeds", type=Path, default=None, help="JSON {unit or 'default': seed}; kept out of the repo")
    p.add_argument("--name", default=None, help="leaderboard name (default: Gradescope's metadata, else the folder)")
    p.add_argument("--leaderboard", type=Path, default=None, help="append the run's leaderboard line (JSON) here")
    p.set_defaults(func=cmd_grade)
    p = sub.add_parser("gradescope", help="build a Gradescope autograder zip")
    p.add_argument("unit")
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default=None)
    p.set_defaults(func=cmd_gradescope)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
