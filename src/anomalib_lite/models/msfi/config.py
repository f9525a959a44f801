"""MSFI's configuration: :class:`MSFIConfig` and its :class:`WeightSearchConfig`, with their checks."""

from __future__ import annotations

from dataclasses import dataclass, field

SEARCH_METHODS = ("paper", "calibrated")
# The held-out share of the test set when ``val_fraction`` is unset, per method.
DEFAULT_VAL_FRACTION = {"paper": 0.1, "calibrated": 0.3}
# The step size when ``lr`` is unset: plain gradient descent (paper), Adam (calibrated).
DEFAULT_SEARCH_LR = {"paper": 20.0, "calibrated": 0.05}


@dataclass
class WeightSearchConfig:
    """The optional module weight search (``model.weight_search.*``), MSFI paper §II-A.4 (L97-111).

    Attributes:
        enabled: run the search as a last stage.
        method: ``paper`` (default, the paper's own search): plain gradient descent on the block logits
            of ``CE(φ, gt)``, the pixel cross-entropy of the weighted map ``φ = Σ_i w_i φ_i`` (in [0, 1])
            against the masks (eq. 8-10); validation set = ``val_fraction`` of each chosen defect kind's
            anomalous images, ``coverage`` of the kinds chosen (L158-160, Table IV). ``calibrated`` (our
            variant): Adam on a class-balanced cross-entropy of ``σ(a·φ + b)`` with a learned calibration,
            validation set = ``val_fraction`` of the anomalous images with masks and of the normal ones.
        val_fraction: share held out (``None``: 0.1, the paper's 10 %, for ``paper``; 0.3 for ``calibrated``).
        coverage: share of the defect kinds the paper's validation set draws from (Table IV: 0.25-1).
        seed: seed of those draws. The held-out images are removed from those the reported metrics use.
        keep_k: blocks kept after the search (``null``: all, weighted); paper Table V: 6 of 9.
        epochs: passes over the validation set (the paper gives none: choice).
        lr: the step ``ξ`` of eq. 9 (``paper``) or Adam's (``calibrated``); ``None``: 20.0 (``paper``:
            choice, the paper gives none; the CE's gradients on the logits are of order 1e-3) or 0.05.
        apply: use the learned weights and the pruning at inference (``false``: equal weights,
            every block; for the before/after comparison with ``eval.py``, where ``keep_k`` can
            also be changed).
    """

    enabled: bool = False
    method: str = "paper"
    val_fraction: float | None = None
    coverage: float = 1.0
    seed: int = 0
    keep_k: int | None = 6
    epochs: int = 30
    lr: float | None = None
    apply: bool = True

    def __post_init__(self) -> None:
        if self.method not in SEARCH_METHODS:
            raise ValueError(f"model.weight_search.method={self.method!r}; choices: {', '.join(SEARCH_METHODS)}")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise ValueError(f"model.weight_search.val_fraction={self.val_fraction} must be in (0, 1)")
        if not 0 < self.coverage <= 1:
            raise ValueError(f"model.weight_search.coverage={self.coverage} must be in (0, 1]")
        if self.coverage < 1 and self.method != "paper":
            raise ValueError(
                f"model.weight_search.coverage={self.coverage} applies to method=paper (the calibrated "
                "variant holds out a share of every anomalous and normal image)"
            )
        if self.keep_k is not None and self.keep_k < 1:
            raise ValueError(f"model.weight_search.keep_k={self.keep_k} must be ≥ 1 (or null)")
        if self.epochs < 1:
            raise ValueError(f"model.weight_search.epochs={self.epochs} must be ≥ 1")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"model.weight_search.lr={self.lr} must be > 0")

    @property
    def fraction(self) -> float:
        """The held-out share in use (``val_fraction``, or the method's default)."""
        return DEFAULT_VAL_FRACTION[self.method] if self.val_fraction is None else self.val_fraction

    @property
    def step_size(self) -> float:
        """The learning rate in use (``lr``, or the method's default)."""
        return DEFAULT_SEARCH_LR[self.method] if self.lr is None else self.lr


@dataclass
class MSFIConfig:
    """MSFI hyper-parameters (paper defaults, each labelled in ``configs/model/msfi.yaml``).

    Attributes:
        scales: input sides of the image pyramid, one student group each.
        image_size: the side the images are decoded at (``data.image_size``; ``None``: not checked). It
            must be at least the largest scale: the pyramid downsamples it, never upsamples.
        levels: teacher levels per group: 3 (``layer1..3``, the paper's Table II best) or 4 (``layer1..4``,
            the paper's conv2_x..conv5_x, L117); ``backbone.layers``, when set, must name that many.
        chained: STFPM baseline (students fed by students) instead of MSFI's separate blocks.
        epochs, lr, momentum, weight_decay: SGD on the students.
        weight_search: :class:`WeightSearchConfig`.
        offline_backbone: the teacher a run uses instead of a torchvision one whose weights are
            not in the torch cache (resolved by ``train.py`` and recorded in the checkpoint's config).
    """

    name: str = "msfi"
    scales: list[int] = field(default_factory=lambda: [128, 256, 384])
    image_size: int | None = None
    levels: int = 3
    chained: bool = False
    epochs: int = 600
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_search: WeightSearchConfig = field(default_factory=WeightSearchConfig)
    offline_backbone: str = "tf_efficientnet_lite0"

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) < 32:
            raise ValueError(f"model.scales={self.scales} must list input sides ≥ 32")
        if self.image_size is not None and self.image_size < max(self.scales):
            raise ValueError(
                f"model.scales={self.scales} go up to {max(self.scales)} px but the images are decoded at "
                f"data.image_size={self.image_size}: the largest scale would be an upsampled decode, with no "
                f"detail the smaller ones lack. Decode at the largest scale and compare maps at the reference "
                f"size: data.image_size={max(self.scales)} eval.map_size=256 (configs/recipe/msfi_*.yaml do), "
                f"or use scales ≤ {self.image_size}"
            )
        if self.levels not in (3, 4):
            raise ValueError(f"model.levels={self.levels} must be 3 (layer1..3) or 4 (layer1..4)")
        if self.epochs < 1:
            raise ValueError(f"model.epochs={self.epochs} must be ≥ 1")
        if self.lr <= 0:
            raise ValueError(f"model.lr={self.lr} must be > 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"model.momentum={self.momentum} must be in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"model.weight_decay={self.weight_decay} must be ≥ 0")
        if self.chained and self.weight_search.enabled:
            raise ValueError(
                "model.weight_search.enabled=true needs separate student blocks (model.chained=false): "
                "chained students feed each other, so a block cannot be dropped alone"
            )
