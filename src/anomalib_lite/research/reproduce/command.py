"""``python scripts/reproduce.py TABLE``: run (or collect) a paper table and set ours beside the paper's.

Each table (``--list``) runs one or more configurations (arms) of ``configs/experiment/<experiment>.yaml``
with ``train.py`` (one multirun per arm and dataset, one job per category and seed), then writes
``results.md`` / ``results.csv``: per category, ours (mean ± std over ``--seeds``), the paper's figure
(from ``anomalib_lite/models/<paper>/paper_tables.yaml``) and the difference. The difference is printed only
where the runs match the paper's setting (its dataset, backbone, metric and, for the mean, every category
of its table); every other cell says why it is not comparable.

Absent data is replaced by its offline stand-in where it has one (``synthetic`` for MVTec AD, ``mnist5k``
for MNIST), marked and never compared. The experiments use the paper's backbone, or stop before any work
with the command that fetches its weights; ``--allow-stand-in`` runs the offline backbone instead, marked
in ``metrics.json`` and in the report, never compared.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.data.mvtec import categories_in
from anomalib_lite.data.one_class import split_files
from anomalib_lite.data.synthetic import SYNTHETIC_CATEGORIES
from anomalib_lite.models.backbones import BACKBONES, torchvision_weights_path
from anomalib_lite.research.reproduce.report import write_report
from anomalib_lite.research.reproduce.results import ArmResult, build_cells, paper_setting, read_runs
from anomalib_lite.research.reproduce.tables import NAMES, STAND_IN_DATA, TABLES, Arm, ReproTable

ONE_CLASS_STAND_IN_CATEGORIES = [str(c) for c in range(10)]


@dataclass
class Plan:
    """What runs for one dataset of a table: the data config used, the categories (or normal classes), and
    what is absent."""

    data: str
    data_used: str | None
    categories: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def stand_in(self) -> bool:
        """The data used is an offline stand-in, not the paper's."""
        return self.data_used is not None and self.data_used != self.data


def data_root(data: str, roots: dict[str, str], workdir: Path) -> Path:
    """Where ``data`` is looked for: ``--root data=PATH`` if given, else ``root`` of ``configs/data/<data>.yaml``
    (relative to ``workdir``, the folder the runs start in)."""
    if data in roots:
        return Path(roots[data])
    return workdir / OmegaConf.load(CONFIG_DIR / "data" / f"{data}.yaml").root


def plan_dataset(table: ReproTable, data: str, roots: dict[str, str], only: list[str] | None, workdir: Path) -> Plan:
    """Decide what runs for ``data``: the real data where present, else its stand-in, else nothing."""
    root = data_root(data, roots, workdir)
    wanted = [c for c in table.categories if only is None or c in only]
    if data == "mvtec":
        present = categories_in(root)
        plan = Plan(data, data, [c for c in wanted if c in present], [c for c in wanted if c not in present])
    else:
        files = {**split_files(data, root, train=True), **split_files(data, root, train=False)}
        absent = [n for n, p in files.items() if p is None]
        plan = Plan(data, data, [] if absent else wanted, note=f"{root}: missing {', '.join(absent)}" if absent else "")
    if plan.categories:
        return plan
    how = f"python scripts/prepare_data.py {data}"
    missing = plan.note or f"no category under {root}"
    stand_in = STAND_IN_DATA.get(data)
    choices = {"synthetic": SYNTHETIC_CATEGORIES, "mnist5k": ONE_CLASS_STAND_IN_CATEGORIES}.get(stand_in or "", [])
    categories = [c for c in choices if only is None or c in only]
    if not categories:
        return Plan(data, None, note=f"skipped: {missing} (get it with: {how})")
    note = f"stand-in data {stand_in}, not comparable with the paper: {missing} (get it with: {how})"
    return Plan(data, stand_in, categories, note=note)


@dataclass
class Options:
    """What the command line asked for, beside the table."""

    out: Path
    roots: dict[str, str] = field(default_factory=dict)
    only: list[str] | None = None
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] | None = None
    allow_stand_in: bool = False
    dry_run: bool = False
    collect: bool = False


def absent_weights(backbone: str) -> str | None:
    """Why the paper's ``backbone`` cannot run here (its ImageNet weights are not cached, with the command
    that fetches them), or ``None`` when it can."""
    spec = BACKBONES.get(backbone)
    if spec is None or spec.pip_package:
        return None
    path = torchvision_weights_path(backbone)[1]
    if path.is_file():
        return None
    return (
        f"the paper's backbone {backbone} has no ImageNet weights in the torch cache ({path}); fetch them with "
        f"python scripts/prepare_data.py weights --name {backbone}, or run the offline stand-in, marked and not "
        "compared, with --allow-stand-in"
    )


def arm_folder(arm: Arm) -> str:
    """A folder name for an arm: its label with anything but letters, digits, ``.``, ``-`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", arm.label).strip("_") or "arm"


def sweep_command(table: ReproTable, arm: Arm, plan: Plan, sweep_dir: Path, options: Options) -> list[str]:
    """The ``anomalib-lite train`` multirun of one arm on one dataset: one job folder per category and seed."""
    key = "category" if plan.data_used in ("mvtec", "synthetic") else "data.normal_class"
    root = [f"data.root={options.roots[plan.data_used]}"] if plan.data_used in options.roots else []
    seeds = [f"seed={','.join(map(str, options.seeds))}"] if options.seeds else []
    return [
        sys.executable,
        "-m",
        "anomalib_lite",
        "train",
        "-m",
        f"+experiment={table.experiment}",
        f"data={plan.data_used}",
        f"{key}={','.join(plan.categories)}",
        *seeds,
        *arm.overrides,
        *(["backbone.allow_stand_in=true"] if options.allow_stand_in else []),
        *root,
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweep.subdir=${{{key}}}/seed${{seed}}",
        *options.overrides,
    ]


def reproduce(table: ReproTable, options: Options, workdir: Path) -> str:
    """Plan, run (unless ``dry_run`` or ``collect``) and report one table, its runs started in ``workdir``;
    return the report's Markdown."""
    results = []
    plans = {data: plan_dataset(table, data, options.roots, options.only, workdir) for data in table.datasets}
    for arm in table.arms:
        for data, plan in plans.items():
            result = ArmResult(arm, data, plan.data_used, notes=[n for n in [plan.note] if n])
            if plan.absent and plan.categories:
                result.notes.append(f"categories absent, not run: {', '.join(plan.absent)}")
            results.append(result)
            missing = arm.missing(table.model)
            if missing:
                result.reason = f"not run: needs {', '.join(missing)}, not in this code" + (
                    f" ({arm.note})" if arm.note else ""
                )
                continue
            result.expected = paper_setting(table, data, arm, CONFIG_DIR)
            result.sweep = options.out / arm_folder(arm) / data
            if options.collect:  # the data the runs used, whatever is present now
                result.notes = []
                datasets = {r.setting["dataset"] for r in read_runs(result.sweep) if r.setting}
                result.data_used = datasets.pop() if len(datasets) == 1 else plan.data_used
            elif not plan.categories:
                continue
            elif not options.allow_stand_in and absent_weights(arm.backbone):
                result.reason = f"not run: {absent_weights(arm.backbone)}"
                print(f"{arm.label}: {result.reason}", file=sys.stderr)
                continue
            else:
                command = sweep_command(table, arm, plan, result.sweep, options)
                print("$ anomalib-lite " + " ".join(command[4:]), flush=True)
                if options.dry_run:
                    continue
                status = subprocess.run(command, cwd=workdir).returncode
                if status != 0:
                    result.notes.append(f"the sweep exited with status {status}: see its run folders' logs")
            result.runs = read_runs(result.sweep)
            folders = {p.parent for p in result.sweep.rglob(".hydra")} if result.sweep.is_dir() else set()
            failed = sorted(str(f.relative_to(result.sweep)) for f in folders - {r.folder for r in result.runs})
            if failed:
                result.notes.append(f"runs that wrote no metrics.json: {', '.join(failed)}")
    for result in results:
        build_cells(table, result)
    settings = [f"only {', '.join(options.only)} (--only)"] if options.only else []
    settings += [f"seeds {', '.join(map(str, options.seeds))} (--seeds)"] if options.seeds else []
    settings += ["--allow-stand-in: the offline backbone stands in where the paper's weights are absent"] * bool(
        options.allow_stand_in
    )
    settings += [f"with {' '.join(options.overrides)}"] if options.overrides else []
    return write_report(table, results, options.out, settings)


def list_tables() -> str:
    """``--list``: every table, its arms, and the paper tables its figures come from."""
    lines = []
    for table in TABLES.values():
        lines.append(f"{table.name}: {table.title}")
        datasets = ", ".join(NAMES[d] for d in table.datasets)
        arms = ", ".join(a.label for a in table.arms)
        lines.append(f"    experiment {table.experiment}; data {datasets}; arms: {arms}")
        missing = sorted({m for a in table.arms for m in a.missing(table.model)})
        if missing:
            lines.append(f"    options not in this code yet (those arms are listed, not run): {', '.join(missing)}")
    return "\n".join(lines)


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text}: expected comma-separated integers, e.g. 0,1,2") from None


def main(argv: list[str] | None = None, workdir: Path | None = None) -> int:
    """Command line (see ``--help``): runs start in ``workdir`` (default: the current folder), where the data
    roots of the configs and ``outputs/`` are."""
    workdir = Path.cwd() if workdir is None else workdir
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  python scripts/reproduce.py --list\n"
        "  python scripts/reproduce.py hfr_mvtec --seeds 0,1,2\n"
        "  python scripts/reproduce.py hfr_mvtec --allow-stand-in --only brick   (offline: synthetic data, Lite0)\n"
        "  python scripts/reproduce.py msfi_scales --root mvtec=/data/mvtec_ad trainer.device=cuda\n"
        "  python scripts/reproduce.py igd_one_class --only 0,1 hydra/launcher=parallel\n"
        "  python scripts/reproduce.py hfr_mvtec --collect --out outputs/reproduce/hfr_mvtec/<time>",
    )
    parser.add_argument("table", nargs="?", choices=sorted(TABLES), help="the paper table to reproduce (--list)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (e.g. trainer.device=cuda)")
    parser.add_argument("--list", action="store_true", help="list the tables and exit")
    parser.add_argument("--out", type=Path, help="report folder (default outputs/reproduce/<table>/<date>_<time>)")
    parser.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="DATA=PATH",
        help="where a dataset lives, e.g. mvtec=/data/mvtec_ad (repeatable)",
    )
    parser.add_argument("--only", help="comma-separated categories or normal classes to run (default: all)")
    parser.add_argument("--seeds", type=_seeds, help="comma-separated seeds: every cell is mean ± std over them")
    parser.add_argument(
        "--allow-stand-in",
        action="store_true",
        help="run the offline backbone where the paper's weights are absent (marked)",
    )
    parser.add_argument("--collect", action="store_true", help="run nothing: report the runs already under --out")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    args = parser.parse_intermixed_args(argv)
    if args.list:
        print(list_tables())
        return 0
    if args.table is None:
        parser.error("name a table (see --list)")
    bad = [r for r in args.root if "=" not in r]
    if bad:
        parser.error(f"--root {bad[0]}: expected DATA=PATH, e.g. mvtec=/data/mvtec_ad")
    if args.collect and not args.out:
        parser.error("--collect needs --out: the report folder of an earlier reproduction")
    out = args.out or workdir / "outputs" / "reproduce" / args.table / time.strftime("%Y-%m-%d_%H-%M-%S")
    if args.collect and not out.is_dir():
        parser.error(f"--out {out}: no such folder to collect")
    if not args.collect and out.exists() and any(out.iterdir()):
        parser.error(
            f"--out {out} already holds files; nothing was overwritten. Choose another folder, "
            "or report its runs with --collect."
        )
    options = Options(
        out,
        dict(r.split("=", 1) for r in args.root),
        args.only.split(",") if args.only else None,
        args.overrides,
        args.seeds,
        args.allow_stand_in,
        args.dry_run,
        args.collect,
    )
    print(reproduce(TABLES[args.table], options, workdir))
    return 0
