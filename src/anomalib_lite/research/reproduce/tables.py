"""The paper tables ``scripts/reproduce.py`` reproduces: what runs for each, and where its figures are.

A table is one command (``scripts/reproduce.py <name>``). It runs one or more *arms* (configurations,
e.g. MSFI's 128 px students) on one or more datasets, on top of ``configs/experiment/<experiment>.yaml``,
and sets each metric beside the paper's figure, read from ``anomalib_lite/models/<paper>/paper_tables.yaml``
through a :class:`PaperRef` (this module holds no figure). An arm whose model option does not exist
in this code yet is listed, with the option it needs, and not run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from anomalib_lite.data.mvtec import MVTEC_CATEGORIES
from anomalib_lite.models.backbones import BACKBONES
from anomalib_lite.models.registry import model_config_class
from anomalib_lite.research.paper_figures import paper_table

ONE_CLASS = [str(c) for c in range(10)]
NAMES = {"mvtec": "MVTec AD", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
# The column label of a one-class dataset in the papers' tables (IGD Table 1, UTAD Table 2).
COLUMN_OF_DATA = {"mnist": "MNIST", "fashion_mnist": "FMNIST", "cifar10": "CIFAR-10"}
# Offline stand-ins: never compared with the paper.
STAND_IN_DATA = {"mvtec": "synthetic", "mnist": "mnist5k"}


@dataclass(frozen=True)
class PaperRef:
    """Where the paper's figure of one metric is.

    Attributes:
        paper, table: the data file and its table (e.g. ``hfr``, ``table1``).
        column: the column; ``{data}`` is replaced by the dataset's column label (:data:`COLUMN_OF_DATA`).
        mean_row: the row of the mean over the table's categories (or the only figure of a mean-only table);
            with ``categories="columns"``, the row holding the per-category figures.
        categories: where the table has one figure per category: ``rows`` (rows named by category),
            ``columns`` (columns named by category, no mean), or ``none`` (the mean only).
        label: shown in the report when an arm gives several figures for one metric (e.g. ``col A``).
    """

    paper: str
    table: str
    column: str
    mean_row: str = "mean"
    categories: str = "rows"
    label: str = "paper"

    def figures(self, data: str) -> tuple[dict[str, float | None], float | None]:
        """Per-category figures (empty for a mean-only table) and the mean (``None`` where the paper gives
        none), for dataset ``data``."""
        table = paper_table(self.paper, self.table)
        if self.categories == "columns":
            return table.column_of_row(self.mean_row), None
        column = self.column.format(data=COLUMN_OF_DATA.get(data, data))
        rows = [c for c in table.rows if c != self.mean_row] if self.categories == "rows" else []
        return {c: table.value(c, column) for c in rows}, table.value(self.mean_row, column)

    def cite(self) -> str:
        """Where the figure is in the paper, for reports: ``HFR Table 1 (Chen et al. 2024, …), column …``."""
        return f"{paper_table(self.paper, self.table).cite()}, column {self.column!r}"


@dataclass(frozen=True)
class Arm:
    """One configuration of a table: its label, overrides, the paper's backbone, and its figures.

    Attributes:
        label: the column of the table it reproduces (e.g. ``128 px``).
        overrides: Hydra overrides on top of the experiment config.
        backbone: the backbone the paper used for it; a run with another one is not compared.
        paper: metric → the paper's figures (the first is compared, the others shown beside it).
        requires: model options (``model.<name>``) or backbones (``backbone=<name>``) the arm needs.
        note: what the arm is, where the setting comes from.
        departure: how the arm differs from the paper's row it sits beside, for an arm that is ours; such an
            arm is shown and never compared.
        backbone_source: where :attr:`backbone` comes from: ``paper`` or, where the paper names none precisely,
            ``choice: <why>``.
    """

    label: str
    overrides: tuple[str, ...] = ()
    backbone: str = ""
    paper: dict[str, tuple[PaperRef, ...]] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    note: str = ""
    departure: str = ""
    backbone_source: str = "paper"

    def missing(self, model: str) -> list[str]:
        """The options of :attr:`requires` this code lacks for ``model``."""
        fields = {f.name for f in dataclasses.fields(model_config_class(model))}
        absent = []
        for need in self.requires:
            if need.startswith("backbone="):
                absent += [] if need.split("=", 1)[1] in BACKBONES else [need]
            elif need.split(".")[1].split("=")[0] not in fields:
                absent.append(need)
        return absent


@dataclass(frozen=True)
class ReproTable:
    """A table as one command.

    Attributes:
        name: the command (``scripts/reproduce.py <name>``). title: shown in the report.
        experiment: ``configs/experiment/<experiment>.yaml``, the paper's setting. model: its model family.
        datasets: where it runs (``mvtec`` or one-class ``mnist``/``fashion_mnist``/``cifar10``).
        arms: its configurations. categories: the categories (or normal classes) of the paper's table.
    """

    name: str
    title: str
    experiment: str
    model: str
    datasets: tuple[str, ...]
    arms: tuple[Arm, ...]
    categories: tuple[str, ...] = tuple(MVTEC_CATEGORIES)


def _hfr(column: str, label: str = "paper") -> dict[str, tuple[PaperRef, ...]]:
    tables = (("image_auroc", "table1"), ("pixel_auroc", "table3"), ("aupro", "table4"))
    return {metric: (PaperRef("hfr", table, column, label=label),) for metric, table in tables}


HFR_B, HFR_A = "HFR col B (unlabelled, headline)", "HFR col A (unlabelled)"
WRN, R18, R50, VGG = "wide_resnet50_2", "resnet18", "resnet50", "vgg19"
MSFI_LEVELS = {"[2,3,4]": "model.levels=3", "[2,3,4,5]": "model.levels=4"}
MSFI_BACKBONES = {"ResNet-18": R18, "ResNet-50": R50, "WideResNet-50": WRN}
ONE_CLASS_DATA = ("mnist", "fashion_mnist", "cifar10")
# Our ablation variants (configs/variant/) → the paper's Table 2 row where identifiable, and how an arm that is ours
# departs from the row beside it.
UTAD_VARIANTS = {
    "full (MI + EN + Guide)": ("+variant=utad_mi_en_guide", "all", ""),
    "baseline (no MI, EN, Guide)": (
        "model.mi_weight=0 model.use_expert=false model.use_detail=false",
        "baseline",
        "it switches off the three components the paper's text names (MI, EN, Guide); the paper's full row ticks "
        "four columns, whose fourth header is lost (utad.txt L125-131), so its Baseline may lack a fourth one ours "
        "keeps",
    ),
    "without MI": ("+variant=utad_en_guide", None, ""),
    "without EN": ("+variant=utad_mi", None, ""),
    "without Guide": ("+variant=utad_mi_en", None, ""),
}

# The paper's Table 5 column → our overrides (configs/model/igd.yaml), what the arm is, how it departs from the row.
IGD_ABLATION = (
    (
        "MS-SSIM",
        ("model.distill=false", "model.descriptor=none", "model.interpolation=false"),
        "the MS-SSIM autoencoder alone, encoder from scratch",
        "",
    ),
    ("+ KD", ("model.descriptor=none", "model.interpolation=false"), "distilled encoder, no descriptor", ""),
    (
        "+ KD + DSVDD",
        ("model.descriptor=svdd", "model.interpolation=false"),
        "Deep SVDD's one-class objective",
        "plain Deep SVDD (Ruff et al.'s one-class objective); the paper's row is soft-boundary Deep SVDD",
    ),
    ("+ KD + GSVDD", ("model.interpolation=false",), "no ACAI interpolation", ""),
    ("+ KD + GSVDD + INTER", (), "the full model", ""),
)


def _msfi_paper_search(coverage: float) -> tuple[str, ...]:
    """Overrides for MSFI's weight search the paper's way with ``coverage`` of the defect kinds (0: no search)."""
    if coverage == 0:
        return ("model.weight_search.enabled=false",)
    return (
        "model.weight_search.enabled=true",
        "model.weight_search.method=paper",
        f"model.weight_search.coverage={coverage}",
    )


def _baseline(
    name: str, title: str, backbone: str, paper: dict[str, tuple[PaperRef, ...]], why: str, *overrides: str
) -> Arm:
    """An arm of anomalib 2.7's ``name`` (``model=anomalib``), beside the paper's own column of that baseline: ours
    (anomalib's model under our data, evaluator and budget), shown and never compared. ``why``: where its backbone
    comes from. ``overrides``: also, e.g. removing an option the table's experiment sets for its own model."""
    return Arm(
        f"{title} (anomalib)",
        ("model=anomalib", f"model.name={name}", f"backbone={backbone}", *overrides),
        backbone,
        paper,
        note=f"anomalib 2.7's {title} (extra: baselines), anomalib's defaults (configs/model/anomalib.yaml)",
        departure=f"our run of anomalib's {title} (our data, evaluator and training budget), beside the figure the "
        "paper reprints from that baseline's own paper, measured in its authors' setting",
        backbone_source=f"choice: {why}",
    )


def _hfr_localisation(column: str) -> dict[str, tuple[PaperRef, ...]]:
    """A baseline's columns of HFR's Tables 3 (pixel AUROC) and 4 (AUPRO); Table 1 has none of them."""
    tables = (("pixel_auroc", "table3"), ("aupro", "table4"))
    return {metric: (PaperRef("hfr", table, column, label=f"paper {column}"),) for metric, table in tables}


def _both_hfr() -> dict[str, tuple[PaperRef, ...]]:
    return {m: refs + _hfr(HFR_A, "paper col A")[m] for m, refs in _hfr(HFR_B).items()}


TABLES: dict[str, ReproTable] = {
    t.name: t
    for t in [
        ReproTable(
            "hfr_mvtec",
            "HFR Tables 1, 3, 4: image AUROC, pixel AUROC, AUPRO per category (MVTec AD)",
            "hfr_mvtec",
            "hfr",
            ("mvtec",),
            (
                Arm(
                    "HFR",
                    backbone=WRN,
                    backbone_source="choice: the paper says only 'pre-trained ResNet' (hfr.txt L27, L55)",
                    paper=_both_hfr(),
                    note="compared with the headline column (col B); col A (the other unlabelled HFR variant) "
                    "beside it",
                ),
                # The baselines of HFR's Tables 3 and 4 that anomalib has (hfr.txt L86, L109: STPM [28], PaDiM [10]).
                _baseline(
                    "stfpm",
                    "STFPM",
                    R18,
                    _hfr_localisation("STPM"),
                    "STFPM's own paper's ResNet-18 (HFR names none for it)",
                ),
                _baseline(
                    "padim",
                    "PaDiM",
                    WRN,
                    _hfr_localisation("PaDiM"),
                    "PaDiM's own best, WideResNet-50-2 (HFR's PaDiM figures are its WR50-Rd550 ones)",
                ),
            ),
        ),
        ReproTable(
            "msfi_mvtec",
            "MSFI Table I: MVTec AD means (WRN-50, multi-scale, no weight search)",
            "msfi_mvtec",
            "msfi",
            ("mvtec",),
            (
                Arm(
                    "multi-scale",
                    backbone=WRN,
                    paper={
                        m: (PaperRef("msfi", "table1", m, "Ours", categories="none"),) for m in ("pixel_auroc", "aupro")
                    },
                ),
                # The baseline of MSFI's Table I that anomalib has (msfi.txt L122: PaDiM [4]).
                _baseline(
                    "padim",
                    "PaDiM",
                    WRN,
                    {
                        m: (PaperRef("msfi", "table1", m, "PaDiM", categories="none", label="paper PaDiM"),)
                        for m in ("pixel_auroc", "aupro")
                    },
                    "PaDiM's own best, WideResNet-50-2 (MSFI's PaDiM figures are its WR50-Rd550 ones)",
                    "~model.levels",  # the experiment's MSFI option
                ),
            ),
        ),
        ReproTable(
            "msfi_levels",
            "MSFI Table II: pixel AUROC by feature levels and backbone, single scale 256 px",
            "msfi_mvtec",
            "msfi",
            ("mvtec",),
            tuple(
                Arm(
                    f"{levels} {name}",
                    (level_option, f"backbone={backbone}", "model.scales=[256]"),
                    backbone,
                    {"pixel_auroc": (PaperRef("msfi", "table2", name, levels, categories="none"),)},
                    requires=("model.levels", f"backbone={backbone}"),
                )
                for levels, level_option in MSFI_LEVELS.items()
                for name, backbone in MSFI_BACKBONES.items()
            ),
        ),
        ReproTable(
            "msfi_scales",
            "MSFI Table III: pixel AUROC per input size, ResNet-50",
            "msfi_mvtec",
            "msfi",
            ("mvtec",),
            tuple(
                Arm(
                    label,
                    (f"model.scales={scales}", f"backbone={R50}"),
                    R50,
                    {"pixel_auroc": (PaperRef("msfi", "table3", label),)},
                    requires=(f"backbone={R50}",),
                )
                for label, scales in (
                    ("128", "[128]"),
                    ("256", "[256]"),
                    ("384", "[384]"),
                    ("multi-scale", "[128,256,384]"),
                )
            ),
        ),
        ReproTable(
            "msfi_coverage",
            "MSFI Table IV: pixel AUROC vs. defect-category coverage of the validation set",
            "msfi_mvtec",
            "msfi",
            ("mvtec",),
            tuple(
                Arm(
                    share,
                    (*_msfi_paper_search(fraction), f"backbone={R50}"),
                    R50,
                    {
                        "pixel_auroc": (
                            PaperRef("msfi", "table4", share, "test", categories="none"),
                            PaperRef("msfi", "table4", share, "val", categories="none", label="paper val"),
                        )
                    },
                    requires=("model.weight_search", f"backbone={R50}"),
                    note="the paper's weight search; 0 % = no search (equal weights); "
                    "ours is on the test set less the validation images; keep_k 6 (the paper's Table V choice: "
                    "Table IV does not say how many blocks it keeps)",
                )
                for share, fraction in (("0%", 0), ("25%", 0.25), ("50%", 0.5), ("75%", 0.75), ("100%", 1))
            ),
        ),
        ReproTable(
            "msfi_k",
            "MSFI Table V: pixel AUROC by module weighting (weight search)",
            "msfi_mvtec",
            "msfi",
            ("mvtec",),
            tuple(
                Arm(
                    label,
                    (*_msfi_paper_search(1), *options),
                    WRN,
                    {"pixel_auroc": (PaperRef("msfi", "table5", label, "Ours", categories="none"),)},
                    note="the paper's weight search (model.weight_search.method=paper), every defect kind",
                    backbone_source="choice: Table V does not name its teacher; Table I's WideResNet-50",
                )
                for label, options in (
                    ("Weight Avg", ("model.weight_search.apply=false",)),
                    ("Weight assignment", ("model.weight_search.keep_k=null",)),
                    ("K=4", ("model.weight_search.keep_k=4",)),
                    ("K=5", ("model.weight_search.keep_k=5",)),
                    ("K=6", ("model.weight_search.keep_k=6",)),
                )
            ),
        ),
        ReproTable(
            "igd_one_class",
            "IGD Table 1: one-class mean image AUROC over the 10 classes",
            "igd_one_class",
            "igd",
            ONE_CLASS_DATA,
            (
                Arm(
                    "IGD (single model)",
                    backbone=R18,
                    paper={
                        "image_auroc": (
                            PaperRef("igd", "table1", "{data}", "Ours (single model)", "none"),
                            PaperRef("igd", "table1", "{data}", "Ours (ensemble of 5)", "none", "paper ensemble"),
                        )
                    },
                ),
            ),
            tuple(ONE_CLASS),
        ),
        ReproTable(
            "igd_mvtec",
            "IGD Tables 2, 3, 4: image accuracy and AUROC per category, mean per-image pixel AUROC",
            "igd_mvtec",
            "igd",
            ("mvtec",),
            (
                Arm(
                    "IGD",
                    backbone=R18,
                    paper={
                        "image_auroc": (PaperRef("igd", "table3", "Ours"),),
                        "image_accuracy": (PaperRef("igd", "table2", "Ours"),),
                        "image_balanced_accuracy": (PaperRef("igd", "table2", "Ours"),),
                        "pixel_auroc_per_image": (PaperRef("igd", "table4", "Ours", categories="none"),),
                    },
                    note="accuracy at our F1-optimal threshold (the paper gives none), over all images and balanced "
                    "over the two classes (the paper's 'mean accuracy' may be either): shown, never compared",
                ),
            ),
        ),
        ReproTable(
            "igd_ablation",
            "IGD Table 5: ablation, CIFAR-10 mean image AUROC",
            "igd_one_class",
            "igd",
            ("cifar10",),
            tuple(
                Arm(
                    label,
                    options,
                    R18,
                    {"image_auroc": (PaperRef("igd", "table5", label, "Ours", categories="none"),)},
                    requires=("model.distill", "model.descriptor", "model.interpolation"),
                    note=note,
                    departure=departure,
                )
                for label, options, note, departure in IGD_ABLATION
            ),
            tuple(ONE_CLASS),
        ),
        ReproTable(
            "utad_mvtec",
            "UTAD Table 1: IoU per category, mean per-image pixel AuROC (MVTec AD)",
            "utad_mvtec",
            "utad",
            ("mvtec",),
            (
                Arm(
                    "UTAD",
                    backbone=VGG,
                    paper={
                        "iou": (PaperRef("utad", "table1", "Ours"),),
                        "pixel_auroc_per_image": (
                            PaperRef("utad", "table1", "Ours", "mean_pixel_auroc_per_image", categories="none"),
                        ),
                    },
                    note="IoU at model.iou_threshold on maps min-max scaled over the test set (the paper's tau "
                    "is lost)",
                ),
            ),
        ),
        ReproTable(
            "utad_one_class",
            "UTAD Table 2: one-class mean image AuROC, the full model",
            "utad_one_class",
            "utad",
            ONE_CLASS_DATA,
            (
                Arm(
                    "UTAD",
                    backbone=VGG,
                    paper={"image_auroc": (PaperRef("utad", "table2", "{data}", "Ours (full)", "none"),)},
                ),
            ),
            tuple(ONE_CLASS),
        ),
        ReproTable(
            "utad_ablation",
            "UTAD Table 2: the ablation (one-class mean image AuROC)",
            "utad_one_class",
            "utad",
            ONE_CLASS_DATA,
            tuple(
                Arm(
                    label,
                    tuple(options.split()),
                    VGG,
                    {"image_auroc": (PaperRef("utad", "table2_ablation", "{data}", row, "none"),)} if row else {},
                    note="" if row else "the paper's row of this variant is not identifiable (its ticks are lost)",
                    departure=departure,
                )
                for label, (options, row, departure) in UTAD_VARIANTS.items()
            ),
            tuple(ONE_CLASS),
        ),
        ReproTable(
            "utad_measures",
            "UTAD Table 3: IoU of the perceptual measurement (PM)",
            "utad_mvtec",
            "utad",
            ("mvtec",),
            (
                Arm(
                    "PM",
                    backbone=VGG,
                    paper={"iou": (PaperRef("utad", "table3", "", "pm", "columns"),)},
                    note="the three VGG-19 layers, equal weights (the paper's are lost); the pixel measures "
                    "(the table's unnamed rows) have no option in this code",
                ),
                *(
                    Arm(
                        layer,
                        (f"backbone.layers=[{tap}]",),
                        VGG,
                        {"iou": (PaperRef("utad", "table3", "", layer, "columns"),)},
                        note=f"the perceptual measure on VGG-19's {layer} alone",
                    )
                    for layer, tap in (("conv1_2", "features.2"), ("conv2_2", "features.7"), ("conv3_4", "features.16"))
                ),
            ),
            ("bottle", "cable", "capsule", "hazelnut"),
        ),
        ReproTable(
            "utad_capacity",
            "UTAD Table 4: model capacity, hazelnut",
            "utad_mvtec",
            "utad",
            ("mvtec",),
            (
                Arm(
                    "UTAD",
                    backbone=VGG,
                    paper={
                        "iou": (PaperRef("utad", "table4", "Ours", "iou", "none"),),
                        "pixel_auroc_per_image": (PaperRef("utad", "table4", "Ours", "pixel_auroc_per_image", "none"),),
                    },
                    note="the AE and UnSt baselines are not in this code",
                ),
            ),
            ("hazelnut",),
        ),
    ]
}
