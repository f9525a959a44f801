"""MSFI: multi-scale feature imitation ("Multi-scale Feature Imitation for Unsupervised Anomaly Localization").

A frozen teacher backbone and, for each input size of an image pyramid, a group of
student blocks. The pyramid is built from the input as decoded (at the largest scale,
``data.image_size``): each smaller scale is an antialiased downsample of it, so every scale
sees the detail its resolution holds (never an upsampled smaller decode).

Block ``S^l`` copies the structure of the teacher's stage ``l`` (the teacher steps after
the previous level, up to level ``l``), starts from random weights and is fed the
**teacher's** feature of the previous level (the stem's output for the first level), so
blocks never feed each other: each can be weighted or dropped alone. ``chained=true``
gives the plain teacher–student baseline (STFPM) instead: one student network with its
own stem, each block fed the previous student block.

Per block, the map is ``0.25·‖f̂_t − f̂_s‖²`` of channel-wise L2-normalised features
(in [0, 1]) upsampled to the input size; the model's map is the weighted mean over
the kept blocks (equal weights unless the weight search ran), its score the map's max.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anomalib_lite.data.datamodule import ValidationSplit
from anomalib_lite.errors import ConfigError
from anomalib_lite.models.backbones import Backbone, BackboneConfig, level_layers
from anomalib_lite.models.base import AnomalyModel, AnomalyOutput, Stage, TinySetting
from anomalib_lite.models.msfi.config import MSFIConfig, WeightSearchConfig
from anomalib_lite.models.msfi.networks import block_map, fresh_copy, pyramid_input
from anomalib_lite.models.registry import register_model


@register_model("msfi", MSFIConfig)
class MSFI(AnomalyModel):
    """Multi-scale teacher–student feature imitation with optional module weight search.

    Args:
        cfg: :class:`MSFIConfig`. backbone_cfg: the teacher and its levels (default: stride 4, 8, 16).
    """

    @classmethod
    def tiny(cls) -> TinySetting:
        """A two-scale pyramid (32, 64 px), one epoch, then two of the module weight search (batches of one: its
        validation split is two images), on a random ResNet-18."""
        search = WeightSearchConfig(enabled=True, method="calibrated", epochs=2, keep_k=3, val_fraction=0.4)
        model = MSFIConfig(image_size=64, scales=[32, 64], epochs=1, weight_search=search)
        return TinySetting(model, BackboneConfig(name="resnet18", weights="none"), batch_size=1)

    def __init__(self, cfg: MSFIConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        levels = backbone_cfg.layers or level_layers(backbone_cfg.name, cfg.levels)
        if len(levels) != cfg.levels:
            raise ConfigError(
                f"backbone.layers={levels} names {len(levels)} levels but model.levels={cfg.levels}; "
                "set backbone.layers=null to take the backbone's own levels"
            )
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
                maps = self.teacher(pyramid_input(image, scale), taps)
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
            x = pyramid_input(image, scale) if teacher is None or self.cfg.chained else None
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

    def _weighted_validation_map(self, batch: dict) -> tuple[Tensor, Tensor]:
        """``φ = Σ_i softmax(logits)_i φ_i`` over the validation batch's pixels whose masks are known, and
        their ground truth (both flat, float32); the frozen students' maps carry no gradient."""
        self.students.eval()  # frozen students: their batch-norm statistics must not move
        if self.stems is not None:
            self.stems.eval()
        with torch.no_grad():
            maps = self.block_maps(batch["image"])
        stacked = torch.stack([maps[i] for i in range(len(maps))], dim=1).float()
        weights = torch.softmax(self.search_logits.float(), 0)
        combined = (stacked * weights[None, :, None, None]).sum(1)
        valid = batch["mask_valid"]
        return combined[valid].flatten(), batch["mask"][:, 0].float()[valid].flatten()

    def _paper_search_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """The paper's ``L_val = CE(φ, gt)`` (eq. 10): the mean pixel binary cross-entropy of the weighted
        map ``φ`` (in [0, 1], clamped away from 0 and 1 for the logarithms) against the masks."""
        phi, target = self._weighted_validation_map(batch)
        phi = phi.clamp(1e-6, 1 - 1e-6)
        loss = -(target * phi.log() + (1 - target) * (1 - phi).log()).mean()
        return {"loss": loss}

    def _calibrated_search_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Class-balanced pixel cross-entropy of ``σ(a·φ + b)`` against the validation batch's masks.

        The learned calibration ``a = exp(log_scale) > 0, b`` lets the loss judge how well ``φ``
        separates defect pixels from normal ones rather than how close its raw values (a few
        hundredths on normal pixels) are to 0 and 1; balancing keeps the rare defect pixels from
        being outweighed. Neither changes the map, which stays ``φ``.
        """
        combined, target = self._weighted_validation_map(batch)
        log_scale, bias = self.search_calibration.float()
        logits = log_scale.exp() * combined + bias
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

    def validation_split(self) -> ValidationSplit | None:
        """The weight search's held-out test images, when the search is enabled: per defect kind
        (``coverage`` of the kinds) for the paper's method, anomalous and normal images for the calibrated one."""
        search = self.cfg.weight_search
        if not search.enabled:
            return None
        by_defect = search.method == "paper"
        return ValidationSplit(search.fraction, search.seed, by_defect=by_defect, coverage=search.coverage)

    def stages(self) -> list[Stage]:
        """``students`` (SGD), then ``weight_search`` when enabled (plain gradient descent on the block
        logits for the paper's method, Adam for the calibrated one)."""
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
        search = cfg.weight_search
        if search.enabled:
            paper = search.method == "paper"
            stages.append(
                Stage(
                    name="weight_search",
                    epochs=search.epochs,
                    parameters=[self.search_logits] if paper else [self.search_logits, self.search_calibration],
                    # paper eq. 9: plain gradient descent, ω ← ω − ξ ∇L_val
                    optimizer=(lambda params: torch.optim.SGD(params, lr=search.step_size))
                    if paper
                    else (lambda params: torch.optim.Adam(params, lr=search.step_size)),
                    step=self._paper_search_step if paper else self._calibrated_search_step,
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
