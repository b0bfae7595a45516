"""`plasticnet sweep run|status|report`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser("sweep", help="train conditions x seeds on Ray and report them as the papers do")
    actions = sweep.add_subparsers(dest="sweep_command", required=True, metavar="{run,status,report}")

    run = actions.add_parser("run", help="train every run of a sweep file not yet done (resumes unfinished ones)")
    run.add_argument("file", type=Path, help="sweep file (TOML; see docs/sweeps.md and sweeps/)")
    run.add_argument("--out", type=Path, help="sweep directory on storage every node sees (default runs/sweeps/NAME)")
    run.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else an embedded Ray on this "
                                       "machine's cores)")
    run.add_argument("--cpus", type=int, help="embedded Ray only: runs at once (default: the machine's cores)")
    run.add_argument("--max-retries", type=int, default=3,
                     help="restarts of a run whose worker process or node dies (default 3)")
    run.set_defaults(func=_run)

    status = actions.add_parser("status", help="runs done, running, failed and left")
    status.add_argument("dir", type=Path, help="sweep directory")
    status.set_defaults(func=_status)

    report = actions.add_parser("report", help="the table per condition (DIR/report.md, report.csv) and curves.png")
    report.add_argument("dir", type=Path, help="sweep directory")
    report.add_argument("--metric", help="default: the sweep file's [report] metric, else the task's first")
    report.add_argument("--statistic", choices=["mean", "median"],
                        help="mean with 95%% interval, or median with min and max (default: the sweep file's)")
    report.set_defaults(func=_report)


def _run(args) -> int:
    from ..errors import ConfigError
    from .ray_driver import run_sweep
    from .spec import load

    sweep = load(args.file)
    if args.max_retries < 0 or (args.cpus is not None and args.cpus < 1):
        raise ConfigError("--max-retries must be >= 0 and --cpus >= 1")
    out = args.out or Path("runs") / "sweeps" / args.file.stem
    counts = run_sweep(sweep, out, args.address, args.cpus, args.max_retries)
    if counts["failed"]:
        print(f"plasticnet: {counts['failed']} run(s) failed (see failed.txt in each); run the command again to "
              f"retry them")
        return 1
    print(f"then: plasticnet sweep report {out}")
    return 0


def _status(args) -> int:
    from .report import format_status, status

    print(format_status(status(args.dir)))
    return 0


def _report(args) -> int:
    from .report import report

    text, md, csv, figure = report(args.dir, args.metric, args.statistic)
    print(text, end="")
    print(f"wrote {md}, {csv}, {figure}")
    return 0
