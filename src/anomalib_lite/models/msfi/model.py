"""MSFI: multi-scale feature imitation (METHODS.md).

A frozen teacher backbone and, for each input size of an image pyramid, a group of
student blocks. Block ``S^l`` copies the structure of the teacher's stage ``l`` (the
teacher steps after the previous level, up to level ``l``), starts from random weights
and is fed the **teacher's** feature of the previous level (the stem's output for the
first level), so blocks never feed each other: each can be weighted or dropped alone.
``chained=true`` gives the plain teacher–student baseline (STFPM) instead: one student
network with its own stem, each block fed the previous student block.

Per block, the map is ``0.25·‖f̂_t − f̂_s‖²`` of channel-wise L2-normalised features
(in [0, 1]) upsampled to the input size; the model's map is the weighted mean over
the kept blocks (equal weights unless the weight search ran), its score the map's max.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anomalib_lite.models.backbones import BACKBONES, Backbone
from anomalib_lite.models.base import AnomalyModel, AnomalyOutput, Stage
from anomalib_lite.models.layers import squared_normalized_distance
from anomalib_lite.models.registry import BackboneConfig, register_model


@dataclass
class WeightSearchConfig:
    """The optional module weight search (``model.weight_search.*``).

    Attributes:
        enabled: run the search as a last stage.
        val_fraction, seed: share of the test images (anomalous-with-mask and normal, each)
            held out as the validation set, and the seed that draws them; they are removed
            from the images the reported metrics use.
        keep_k: blocks kept after the search (``null``: all, weighted).
        epochs, lr: Adam on the block logits (and the loss's calibration, see ``MSFI._search_step``).
        apply: use the learned weights and the pruning at inference (``false``: equal weights,
            every block; for the before/after comparison with ``eval.py``, where ``keep_k`` can
            also be changed).
    """

    enabled: bool = False
    val_fraction: float = 0.3
    seed: int = 0
    keep_k: int | None = 6
    epochs: int = 30
    lr: float = 0.05
    apply: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"model.weight_search.val_fraction={self.val_fraction} must be in (0, 1)")
        if self.keep_k is not None and self.keep_k < 1:
            raise ValueError(f"model.weight_search.keep_k={self.keep_k} must be ≥ 1 (or null)")
        if self.epochs < 1:
            raise ValueError(f"model.weight_search.epochs={self.epochs} must be ≥ 1")
        if self.lr <= 0:
            raise ValueError(f"model.weight_search.lr={self.lr} must be > 0")


@dataclass
class MSFIConfig:
    """MSFI hyper-parameters (paper defaults; see METHODS.md).

    Attributes:
        scales: input sides of the image pyramid, one student group each.
        chained: STFPM baseline (students fed by students) instead of MSFI's separate blocks.
        epochs, lr, momentum, weight_decay: SGD on the students.
        weight_search: :class:`WeightSearchConfig`.
        offline_backbone: the teacher a run uses instead of a torchvision one whose weights are
            not in the torch cache (resolved by ``train.py`` and recorded in the checkpoint's config).
    """

    name: str = "msfi"
    scales: list[int] = field(default_factory=lambda: [128, 256, 384])
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


def fresh_copy(module: nn.Module) -> nn.Module:
    """A trainable copy of ``module`` with every layer re-initialised (random weights, reset statistics)."""
    clone = copy.deepcopy(module)
    for layer in clone.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
    clone.requires_grad_(True)
    return clone


def resized(image: torch.Tensor, side: int) -> torch.Tensor:
    """``image`` (``B×C×H×W``) bilinearly resized to ``side×side`` (itself when already that wide)."""
    return image if image.shape[-1] == side else F.interpolate(image, size=side, mode="bilinear")


def block_map(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """``0.25·‖f̂_t − f̂_s‖²`` per position: ``B×C×h×w`` twice → ``B×h×w`` in [0, 1]."""
    return 0.25 * squared_normalized_distance(teacher.float(), student.float())


@register_model("msfi", MSFIConfig)
class MSFI(AnomalyModel):
    """Multi-scale teacher–student feature imitation with optional module weight search.

    Args:
        cfg: :class:`MSFIConfig`. backbone_cfg: the teacher and its levels (default: stride 4, 8, 16).
    """

    def __init__(self, cfg: MSFIConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        levels = backbone_cfg.layers or BACKBONES[backbone_cfg.name].default_layers
        self.teacher = Backbone(backbone_cfg.name, levels, backbone_cfg.weights)
        names = self.teacher.names
        # Level l's student copies the teacher steps after level l−1 (after the stem for l = 1).
        bounds = [0] + [names.index(level) for level in self.teacher.layers]
        self.inputs = [names[i] for i in bounds[:-1]]
        self.segments = [(a + 1, b + 1) for a, b in zip(bounds[:-1], bounds[1:])]
        self.students = nn.ModuleList(
            nn.ModuleList(fresh_copy(nn.Sequential(*self.teacher.steps[a:b])) for a, b in self.segments)
            for _ in cfg.scales
        )
        self.stems = nn.ModuleList(fresh_copy(self.teacher.steps[0]) for _ in cfg.scales) if cfg.chained else None
        n_blocks = len(cfg.scales) * len(self.segments)
        self.search_logits = nn.Parameter(torch.zeros(n_blocks))
        # log a and b of the search's calibration σ(a·φ + b); a starts at 10 for maps of a few tenths.
        self.search_calibration = nn.Parameter(torch.tensor([2.3, -2.0]))
        self.register_buffer("block_weights", torch.full((n_blocks,), 1.0 / n_blocks))
        self.register_buffer("kept", torch.ones(n_blocks, dtype=torch.bool))

    @property
    def block_names(self) -> list[str]:
        """``<scale>px/<level>`` for every block, in the order of the weights."""
        return [f"{scale}px/{level}" for scale in self.cfg.scales for level in self.teacher.layers]

    def _taps(self, deepest: int) -> list[str]:
        """The teacher steps the blocks up to level ``deepest`` read or imitate."""
        return list(dict.fromkeys(self.inputs[: deepest + 1] + self.teacher.layers[: deepest + 1]))

    def teacher_features(self, image: torch.Tensor) -> dict[str, Tensor]:
        """The teacher's features of ``B×3×H×W`` images at every scale, for every block:
        ``<scale>px/<step>`` → ``B×C×h×w`` (what :meth:`block_features` computes itself when not given them)."""
        taps = self._taps(len(self.segments) - 1)
        features = {}
        for scale in self.cfg.scales:
            with torch.no_grad():
                maps = self.teacher(resized(image, scale), taps)
            features.update({f"{scale}px/{tap}": f for tap, f in zip(taps, maps)})
        return features

    def block_features(
        self, image: torch.Tensor, only: list[int] | None = None, teacher: dict[str, Tensor] | None = None
    ) -> Iterator[tuple[int, Tensor, Tensor]]:
        """Teacher and student features of each block.

        Args:
            image: ``B×3×H×W`` normalised. only: block indices to run (``None``: all); a scale
                none of whose blocks is asked for is not run at all, nor are deeper teacher stages.
            teacher: :meth:`teacher_features` of ``image`` when already computed (e.g. cached by the engine).
        Yields:
            ``(block index, teacher feature, student feature)``, each feature ``B×C×h×w``.
        """
        n_levels = len(self.segments)
        wanted = set(range(len(self.cfg.scales) * n_levels) if only is None else only)
        for s, scale in enumerate(self.cfg.scales):
            levels = [lv for lv in range(n_levels) if s * n_levels + lv in wanted]
            if not levels:
                continue
            taps = self._taps(levels[-1])
            x = resized(image, scale) if teacher is None or self.cfg.chained else None
            if teacher is None:
                with torch.no_grad():
                    feats = dict(zip(taps, self.teacher(x, taps)))
            else:
                feats = {tap: teacher[f"{scale}px/{tap}"] for tap in taps}
            student = self.stems[s](x) if self.cfg.chained else None
            for lv in range(levels[-1] + 1):
                if self.cfg.chained:
                    student = self.students[s][lv](student)
                elif lv in levels:
                    student = self.students[s][lv](feats[self.inputs[lv]])
                if lv in levels:
                    yield s * n_levels + lv, feats[self.teacher.layers[lv]], student

    def block_maps(self, image: torch.Tensor, only: list[int] | None = None) -> dict[int, torch.Tensor]:
        """Per-block maps ``B×H×W`` at the input size, by block index (``only`` as :meth:`block_features`)."""
        return {
            index: F.interpolate(block_map(t, s)[:, None], size=image.shape[-2:], mode="bilinear")[:, 0]
            for index, t, s in self.block_features(image, only)
        }

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Σ over blocks of the mean ``‖f̂_t − f̂_s‖²`` (4 × the block map); each block's term is logged.
        Uses ``batch["features"]`` (see :meth:`teacher_features`) when the batch has them."""
        names = self.block_names
        blocks = self.block_features(batch["image"], teacher=batch.get("features"))
        terms = {names[i]: 4 * block_map(t, s).mean() for i, t, s in blocks}
        return {"loss": sum(terms.values()), **terms}

    def _search_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Class-balanced pixel cross-entropy of ``σ(a·φ + b)``, ``φ = Σ_i softmax(logits)_i φ_i``,
        against the validation batch's masks.

        The learned calibration ``a = exp(log_scale) > 0, b`` lets the loss judge how well ``φ``
        separates defect pixels from normal ones rather than how close its raw values (a few
        hundredths on normal pixels) are to 0 and 1; balancing keeps the rare defect pixels from
        being outweighed. Neither changes the map, which stays ``φ``.
        """
        self.students.eval()  # frozen students: their batch-norm statistics must not move
        if self.stems is not None:
            self.stems.eval()
        with torch.no_grad():
            maps = self.block_maps(batch["image"])
        stacked = torch.stack([maps[i] for i in range(len(maps))], dim=1).float()
        weights = torch.softmax(self.search_logits.float(), 0)
        combined = (stacked * weights[None, :, None, None]).sum(1)
        log_scale, bias = self.search_calibration.float()
        logits = log_scale.exp() * combined + bias
        valid = batch["mask_valid"]
        target = batch["mask"][:, 0].float()[valid]
        logits = logits[valid]
        positive, negative = target > 0.5, target <= 0.5
        if not positive.any() or not negative.any():
            return {"loss": logits.sum() * 0}
        loss = 0.5 * (F.softplus(-logits[positive]).mean() + F.softplus(logits[negative]).mean())
        return {"loss": loss}

    def _record_search(self, done_epochs: int) -> None:
        """Store the softmax weights and the top-``keep_k`` blocks (kept in the checkpoint)."""
        with torch.no_grad():
            self.block_weights.copy_(torch.softmax(self.search_logits, 0))
            self.kept.zero_()
            self.kept[self.active_blocks()] = True

    @property
    def search_applied(self) -> bool:
        """Whether inference uses the searched weights and pruning (search enabled and ``apply`` on)."""
        return self.cfg.weight_search.enabled and self.cfg.weight_search.apply

    def active_blocks(self) -> list[int]:
        """Blocks run at inference: the ``keep_k`` of highest weight when :attr:`search_applied`
        (``keep_k`` may be changed at evaluation), else every block."""
        n = len(self.block_weights)
        if not self.search_applied:
            return list(range(n))
        return sorted(self.block_weights.topk(min(self.cfg.weight_search.keep_k or n, n)).indices.tolist())

    def _student_parameters(self) -> list[nn.Parameter]:
        groups = [self.students] + ([self.stems] if self.stems is not None else [])
        return [p for group in groups for p in group.parameters()]

    def validation_split(self) -> tuple[float, int] | None:
        """The weight search's held-out share of the test set, when the search is enabled."""
        search = self.cfg.weight_search
        return (search.val_fraction, search.seed) if search.enabled else None

    def stages(self) -> list[Stage]:
        """``students`` (SGD), then ``weight_search`` (Adam on the block logits) when enabled."""
        cfg = self.cfg
        stages = [
            Stage(
                name="students",
                epochs=cfg.epochs,
                parameters=self._student_parameters(),
                optimizer=lambda params: torch.optim.SGD(
                    params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
                ),
                step=self.training_step,
                features=self.teacher_features,
            )
        ]
        if cfg.weight_search.enabled:
            stages.append(
                Stage(
                    name="weight_search",
                    epochs=cfg.weight_search.epochs,
                    parameters=[self.search_logits, self.search_calibration],
                    optimizer=lambda params: torch.optim.Adam(params, lr=cfg.weight_search.lr),
                    step=self._search_step,
                    on_epoch_end=self._record_search,
                    split="validation",
                )
            )
        return stages

    @torch.inference_mode()
    def predict(self, image: torch.Tensor) -> AnomalyOutput:
        """Map: mean of the :meth:`active_blocks`' maps, weighted by the learned weights when the search
        is applied (equal weights otherwise); score: the map's max."""
        kept = self.active_blocks()
        weights = self.block_weights if self.search_applied else torch.ones_like(self.block_weights)
        maps = self.block_maps(image, kept)
        total = sum(weights[i] * maps[i] for i in kept) / weights[kept].sum()
        return AnomalyOutput(anomaly_map=total.float(), score=total.flatten(1).amax(1).float())
