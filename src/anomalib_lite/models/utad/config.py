"""UTAD's configuration: :class:`UTADConfig`, its hyper-parameters, their checks and the network variant."""

from __future__ import annotations

from dataclasses import dataclass, field

from anomalib_lite.models.utad.networks import LATENT_HEADS

MI_OPTIMIZERS = ("adam", "sgd")


@dataclass
class UTADConfig:
    """UTAD hyper-parameters; labels say where each comes from: *paper* (``utad.txt L<n>``), *ref-code*
    (github.com/DreamtaleCore/UTAD: ``IE-Net/configs/mvtec.yaml``, ``Expert-Net/configs/mvtec_ad.yaml`` and the
    modules named) or *choice*. Departures that no option controls are listed in :mod:`anomalib_lite.models.utad.model`.

    Attributes:
        image_size: input side (set from ``data.image_size``). small: the small-image networks (paper L113: "we
            reduce the number of inception blocks to 3 in IE-Net", read as 3 per encoder and decoder out of L102's
            4 + 4, our reading, and 1 residual block in the Expert-Net; which inception block goes is our choice:
            the encoder's last and the decoder's first); ``None`` = when ``image_size ≤ 64`` (choice:
            the paper's one-class size is lost; the ref-code resizes those images to 64).
        latent: IE-Net code size, 128 (ref-code: ``inceptionCAE.py`` L60-61, μ and log σ² of 128; the paper's
            size is lost). latent_head, mlp_hidden, initial_log_var: see :class:`IENet` (``paper``: three FC layers,
            L102; ``ref``: the ref-code's conv side branch; ``initial_log_var``: choice, ``None`` = PyTorch's
            default bias, σ ≈ 1 at the start; the ``utad_synthetic`` recipe's -6, σ ≈ 0.05, is what lets its MI
            term leave chance, measured in the README).
        ie_epochs, momentum: SGD of stage 1 (paper L112: 200 epochs, momentum 0.9). ie_lr, ie_weight_decay,
            ie_milestones, ie_lr_decay: the paper's learning rate is lost from the text (L112); the ref-code's
            lr 1e-3, weight decay 1e-4, ×0.1 at epochs 200 and 350 (of its 400: with ``ie_epochs=200`` neither is
            reached, the first falling on the step after the last). ie_warmup_epochs: 2 in the ref-code's
            config (``warmup_epochs``); its training script is not released, so the form, a linear rise per step
            to the full rate, is our choice. The MI discriminator's Adam follows the same warm-up and step schedule
            (choice: the ref-code's config, ``schedule`` L20, does not say which optimisers it applies to).
        mi_optimizer, mi_lr: the MI discriminator's own optimiser. ``adam`` (choice: the ref-code's training script
            is not released; its config gives the feature discriminators their own rate, ``d_feat_lr``) with
            ``betas``, or ``sgd`` (a parameter group of the IE-Net's SGD, the setting in which its BCE stayed at
            chance). ``mi_lr``: 1e-3 (choice; the ref-code's ``d_feat_lr`` is 1e-4).
        recon_weight, kl_weight, mi_weight: stage-1 loss weights (L2 100 ref-code, KL to N(0, I) 0.1 ref-code,
            MI 1 choice: the ref-code weighs a local MI term 1.5 and a global one 0.5, we have one global term;
            ``mi_weight=0`` is the paper's "without MI" ablation, L142). The encoder minimises the discriminator's
            BCE with it (cooperative, Deep-InfoMax style: choice, our reading of L46-50, whose equations are lost;
            the ref-code's ``LatentDiscriminaor.calc_gen_loss``, ``discriminator.py`` L40-43, and its generator-side
            weights ``weight_gan_feat_l/g``, ``mvtec.yaml`` L31-32, suggest an adversarial encoder term, but its
            training script is not released).
        expert_epochs, expert_lr, betas: Adam of stage 2 (paper L112: Adam, its rate is lost from the text;
            lr 1e-4 and betas (0.5, 0.999) ref-code, MUNIT's; epochs: choice, ref-code 500 k iterations at batch 1).
            No weight decay and a constant rate (choice; ref-code ``mvtec_ad.yaml`` L19, L24-26: weight decay 1e-4,
            ×0.5 every 50 k iterations, a halving that 200 epochs at batch 4 would not reach on any MVTec AD
            category, ≤ 391 training images: ≤ 19 600 steps).
        expert_downsample: strided convs of the Expert-Net's encoders, and upsampling convs of its decoders
            (each doubles / halves the width from 64: MUNIT's, ref-code ``Expert-Net/networks.py`` L174-205).
            2 (default, ref-code ``n_downsample: 2``, ``mvtec_ad.yaml`` L39): 3 conv blocks in each encoder and
            decoder, a 256-channel content code at S/4. 3: the paper's "4 convolutional blocks" (L105), a
            512-channel code at S/8 and 53.7 M Expert-Net parameters at 256 px instead of 14.1 M. The default
            stays the ref-code's because the paper's own count, 16.77 M for the whole model (Table 4, L165),
            cannot hold with 4 blocks built as MUNIT (and the ref-code) builds them.
        detail_dim, detail_convs: detail code size (ref-code 8) and conv layers of the detail extractor (paper 3,
            L105; ref-code 5).
        image_weight, naive_weight, detail_weight: stage-2 L1 weights: x̂ vs x 10 (ref-code ``recon_x_w``), x_N
            vs x_I 1 (choice: paper L65 gives no weight and the ref-code's config no key for it, its naïve impression
            coming from a second generator whose training script is not released), detail codes 1 (ref-code
            ``recon_d_w``; the norm, L1, is ref-code too, ``recon_criterion``, ``Expert-Net/trainer.py`` L30-31:
            paper L64 says only "identical"; the target code is detached, choice).
        use_expert, use_detail: ablations (see the module doc).
        score: ``max`` or ``mean`` of the map (choice: the paper does not say how an image's score is formed).
            iou_threshold: the evaluator's segmentation IoU threshold τ (eq. 9, L70-72; choice 0.5, the paper's
            value is lost, L108). The maps are scaled to [0, 1] by the test set's min and max, and the IoU is the
            mean over anomalous images (both choice: the paper says neither; the ref-code's ``postprocessing.py``
            L188 scales each map on its own, its ``evaluate.py`` is not released).
        perceptual_weights: the weight λ_l of each perceptual layer (``backbone.layers``, in order) in the map
            ``Σ_l λ_l · mean_c (φ_l(a) − φ_l(b))²``: our reading of paper L108 ("… in the VGG-19 network and set
            in our experiments"), where what is set is lost, plausibly λ_l of the lost eq. 8; ``None``: 1 each
            (choice).
        offline_backbone: the perceptual network used when VGG-19's weights are not in the torch
            cache and ``backbone.allow_stand_in`` is true (resolved by ``train.py``): choice, a departure from
            paper L108's VGG-19; it runs with its own default taps (EfficientNet-Lite0 ``blocks.1/.2/.4``), not
            ``conv1_2, conv2_2, conv3_4``. The ``utad_*`` experiments set ``allow_stand_in`` false.
    """

    name: str = "utad"
    image_size: int = 256
    small: bool | None = None
    latent: int = 128
    latent_head: str = "paper"
    mlp_hidden: int = 512
    initial_log_var: float | None = None
    ie_epochs: int = 200
    ie_lr: float = 1e-3
    ie_weight_decay: float = 1e-4
    ie_milestones: list[int] = field(default_factory=lambda: [200, 350])
    ie_lr_decay: float = 0.1
    ie_warmup_epochs: int = 2
    momentum: float = 0.9
    mi_optimizer: str = "adam"
    mi_lr: float = 1e-3
    recon_weight: float = 100.0
    kl_weight: float = 0.1
    mi_weight: float = 1.0
    expert_epochs: int = 200
    expert_lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    expert_downsample: int = 2
    detail_dim: int = 8
    detail_convs: int = 3
    image_weight: float = 10.0
    naive_weight: float = 1.0
    detail_weight: float = 1.0
    use_expert: bool = True
    use_detail: bool = True
    score: str = "max"
    iou_threshold: float = 0.5
    perceptual_weights: list[float] | None = None
    offline_backbone: str = "tf_efficientnet_lite0"

    def __post_init__(self) -> None:
        if self.perceptual_weights is not None and (
            not self.perceptual_weights or any(w < 0 for w in self.perceptual_weights)
        ):
            raise ValueError(f"model.perceptual_weights={self.perceptual_weights} must be a list of weights ≥ 0")
        for key in ("ie_epochs", "expert_epochs", "latent", "detail_dim", "mlp_hidden"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key}={getattr(self, key)} must be ≥ 1")
        if self.score not in ("max", "mean"):
            raise ValueError(f"model.score={self.score!r} must be 'max' or 'mean'")
        reduction = 16 if self.small_variant else 32  # the IE-Net's pooling (networks.ENCODER_PLAN)
        if self.image_size % reduction:
            variant = "small IE-Net (model.small, or image_size ≤ 64)" if self.small_variant else "IE-Net"
            raise ValueError(
                f"model.image_size={self.image_size} (data.image_size) must be a multiple of {reduction} "
                f"for the {variant}"
            )
        if not 0 <= self.ie_warmup_epochs <= self.ie_epochs:
            raise ValueError(f"model.ie_warmup_epochs={self.ie_warmup_epochs} must be in 0..model.ie_epochs")
        for key in ("ie_lr", "expert_lr", "mi_lr"):
            if getattr(self, key) <= 0:
                raise ValueError(f"model.{key}={getattr(self, key)} must be > 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"model.momentum={self.momentum} must be in [0, 1)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"model.betas={self.betas} must be two numbers in [0, 1)")
        for key in ("recon_weight", "kl_weight", "mi_weight", "image_weight", "naive_weight", "detail_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"model.{key}={getattr(self, key)} must be ≥ 0")
        if self.latent_head not in LATENT_HEADS:
            raise ValueError(f"model.latent_head={self.latent_head!r}; choices: {', '.join(LATENT_HEADS)}")
        if not 1 <= self.expert_downsample <= 4:  # ≤ 4: the IE-Net's multiple of 16 divides by 2^4 (checked above)
            raise ValueError(
                f"model.expert_downsample={self.expert_downsample} must be in 1..4 (ref-code 2, paper L105's 4 conv "
                "blocks: 3)"
            )
        if not 2 <= self.detail_convs <= 5:
            raise ValueError(f"model.detail_convs={self.detail_convs} must be in 2..5")
        if not 0 <= self.iou_threshold <= 1:
            raise ValueError(f"model.iou_threshold={self.iou_threshold} must be in [0, 1]")
        if self.mi_optimizer not in MI_OPTIMIZERS:
            raise ValueError(f"model.mi_optimizer={self.mi_optimizer!r}; choices: {', '.join(MI_OPTIMIZERS)}")

    @property
    def small_variant(self) -> bool:
        """Whether the small-image networks are used."""
        return self.image_size <= 64 if self.small is None else self.small

    @property
    def residual_blocks(self) -> int:
        """Residual blocks of the Expert-Net's encoders and decoders: 1 on small images, else 2 (paper L105, L113)."""
        return 1 if self.small_variant else 2
