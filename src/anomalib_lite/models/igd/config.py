"""IGD's configuration: :class:`IGDConfig`, its hyper-parameters, their checks and the settings they derive."""

from __future__ import annotations

from dataclasses import dataclass, field

NORMALISED_RANGE = 4.7579  # paper L185: the range of ImageNet-normalised pixels, (1 − 0.406)/0.225 + 0.485/0.229
SSIM_SPACES = ("normalised", "unit")
COMBINE = ("beta", "equal")
DESCRIPTORS = ("gaussian", "svdd", "none")
GLOBAL_ENCODERS = ("resnet18", "paper_blocks")
PATCH_FUSIONS = ("mean", "sum")
CRITIC_NORMS = ("layer", "layer_elementwise", "batch")
DECODER_NORMS = ("batch", "fixed")
CRITIC_UPDATES = ("joint", "after")
SSIM_CHANNELS = ("joint", "per_channel")
SSIM_MAPS = ("padded", "ref")
INTERPOLATION_PARTNERS = ("batch", "features")


@dataclass
class IGDConfig:
    """IGD hyper-parameters; labels say where each comes from (paper line, ref-code or choice).

    Reported model: the model after the last of ``epochs``, evaluated once on the test set (choice: the paper
    does not say which checkpoint it reports, L153-L185 give only the epoch counts). The ref-code evaluates on
    the test set every 10 epochs and at the end (``p32/ssim_main.py:324-326``; every 5: ``p256/ssim_main.py:304-306``)
    and writes the maximum AUC over those evaluations (``p32/ssim_main.py:403-413``, ``p256/ssim_main.py:369-379``),
    a selection on the test set that we do not make.

    Precision: the training steps run under ``trainer.precision`` (default ``auto``: bf16 autocast on CUDA, fp32
    on a CPU; choice: the ref-code trains in fp32, paper L185 names PyTorch and no precision); ``ℓ_m`` is always
    computed in fp32.

    Attributes:
        image_size: side of the input images (set from ``data.image_size``).
        epochs: EM-stage epochs per model (paper L185: 128 one-class, 256 MVTec AD).
        lr, weight_decay, lr_power: Adam 1e-4, wd 1e-6, polynomial decay to 0 (paper L185; the power 0.9
            is ref-code, ``p32/ssim_main.py:150-166``). betas: Adam's betas; the paper is silent (choice: Adam's
            defaults; ref-code (0, 0.9), ``p32/ssim_main.py:459-460``, ``p256/ssim_main.py:427-428``:
            ``betas=[0.0, 0.9]``).
        critic_weight_decay: the critic's weight decay; ``None`` = ``weight_decay`` (paper L185 gives one weight
            decay for the training); ref-code 0 (its critic's Adam has none: ``p32/ssim_main.py:460``,
            ``p256/ssim_main.py:428``).
        critic_update: ``joint`` (choice): the critic steps with the autoencoder, its loss on the reconstructions
            before the step; ``after`` (ref-code ``p32/ssim_main.py:292-305``): the autoencoder steps first, then
            the critic's loss is computed on the updated autoencoder's reconstructions and the critic steps with its
            own Adam (its loss is then not logged: it is computed inside the optimiser step). The paper (L133) does
            not say.
        kd_steps, kd_batch_size, kd_lr, kd_weight_decay: distillation of the local encoder in optimiser
            steps of ``kd_batch_size`` local inputs (paper L189: 50 000 steps at batch 64, Adam 1e-4, wd 1e-5, at a
            constant rate: L189 names no schedule), rounded up to whole epochs (at most one epoch more: the engine's
            stages run whole epochs); 0 steps skips it. Per category, on its own training images (paper L127:
            "using the images from D"; the ref-code has no distillation script and loads one ``Encoder_KD_ckpt``
            for every category, ``p32/ssim_main.py:454-457``). Target: the teacher's pooled last stage (our
            reading of L189's "intermediate layer ... with the same 512-dimensional features", see
            ``IGD.teacher_features``). kd_input_size: the backbone sees the inputs resized to this side (choice).
        freeze_encoder: fix the distilled encoder body after distillation (paper L189, ref-code); ``false``
            trains it in the EM stage too (an option, not the paper). It applies only to a distilled body:
            without distillation there is nothing to fix and the body trains from its random initialisation.
        distill, descriptor, interpolation: the paper's Table 5 ablation (L214–L223); the defaults are the full
            model. ``distill=false`` (no "KD"): no distillation stage (as ``kd_steps=0``), the local encoder
            trains from scratch. ``descriptor``: ``gaussian`` = GSVDD (eq. 7, E-step every ``estep_every``
            epochs); ``svdd`` = Deep SVDD [60]: loss and score term ``‖z − c‖²`` to a fixed centre ``c``, the
            mean of the codes at the start of the EM stage (components under ``mu_min`` pushed out, as Deep
            SVDD's ε = 0.1); Ruff's one-class objective, while the paper's row says soft-boundary (choice);
            ``none`` = the MS-SSIM autoencoder alone, score ``ℓ_m``. ``interpolation=false`` (no "INTER"): no
            ACAI, i.e. no critic (eq. 5) and no generator term (eq. 6).
        width: channels of the first conv (ref-code 64). hidden, latent: 512-d distilled feature, 128-d code
            (paper L185/L189).
        critic_norm: the critics' normalisation: ``layer`` (choice: over ``C×H×W``, one affine pair per channel),
            ``layer_elementwise`` (ref-code ``LayerNorm([C, H, W])``, ``p32/ssim_module.py:102-103``: one affine
            pair per element; the critics then hold the ref-code's 2 964 993 and 17 715 201 parameters) or
            ``batch`` (paper L189: every residual block of the encoder, decoder and critic has batch
            normalisation).
        decoder_norm: the decoders' batch norms in training: ``batch`` (paper L189: batch normalisation, each
            batch's statistics, running statistics for inference) or ``fixed`` (ref-code: its generator trains in
            eval mode throughout, ``init_c`` calling ``net.eval()`` at ``p32/ssim_main.py:181`` and
            ``p256/ssim_main.py:162`` with nothing calling ``train()`` after it, so each batch norm is a trained
            per-channel affine over its initial running mean 0 and variance 1, in training and inference).
        local_size, patch_stride: the local model's input side (paper L189: 32) and, on larger images, the patch
            stride (ref-code 16, ``p32/ssim_main.py:44``; the paper gives none).
        patches_per_image: ``None`` = every patch of every training image each epoch (ref-code
            ``p32/ssim_main.py:261-263``); a number
            = that many random patches per image (a smaller budget, for CPUs).
        micro_batch: the local stage's patches per forward and backward pass (≥ 2; ``None``: all of a step's
            patches in one pass). Their gradients are accumulated before the step's one optimiser step, the same
            update as one pass where no layer mixes samples (``decoder_norm=fixed``, ``critic_norm=layer`` or
            ``layer_elementwise``); with ``decoder_norm=batch`` or ``critic_norm=batch`` each micro-batch is
            normalised by its own statistics. Memory, not the method: choice (neither paper nor ref-code has it).
            Needs ``critic_update=joint``.
        use_global: train the global model too; ``None`` = when images are larger than ``local_size``.
        global_encoder: the global model's encoder. ``resnet18`` (ref-code ``p256/mvtec_module.py:241-247``): the
            backbone's frozen pooled deepest stage (ResNet-18: 512-d), then the trained 512→128 layer.
            ``paper_blocks``: paper L189 says "the encoder and critic consist of four residual blocks" (filters
            "512–256–128–64" and "128–256–512–512"; the first are the ref-code decoder's widths): built as the
            critic's down path (conv5 stride 2, four residual down blocks ``w→2w→4w→8w→8w`` with batch norm,
            conv3 stride 2), a linear layer to ``hidden``, then to ``z``. This is the ref-code's ``Encoder_256``
            (``p256/mvtec_module.py:201-225``, the same parameter count) with its 512→128 layer; the ref-code's
            commented-out variant loads it pre-trained (``Encoder_256_ckpt``) and frozen
            (``p256/mvtec_module.py:233-238``) before using ResNet18 instead (``:241-244``). Ours trains it with
            the global autoencoder from scratch (choice: our reading of the ambiguous line, the paper gives no
            pre-training for it; a departure from the ref-code's pre-trained, frozen variant).
        patch_fusion: how the local model's overlapping patch maps fold back into an image map: ``mean``
            (choice: each pixel the mean of the patches covering it) or ``sum`` (ref-code
            ``multi_scale/inference_loc.py:40-42``: an unnormalised fold). The paper is silent.
        hflip: flip each training image horizontally with probability 1/2 in the local and global stages (and
            their E-steps): ref-code (``p32/ssim_main.py:117``, ``p256/ssim_main.py:105``; its E-steps read the
            same loader, whose ``p32`` one also drops the last incomplete batch, ``p32/ssim_main.py:129``); the
            paper mentions no augmentation, so the default is off (choice). Their frozen features are then computed
            per step (no feature cache).
        rho: MAE weight of ℓ_m (paper L187: 0.15). beta: the global model's weight against the local one
            (paper eq. 8/12, L187: 0.1 on MVTec AD). Eq. 12 weighs the two MS-SSIM terms; the paper has a single
            reconstruction and code, so weighing each model's MAE and ℓ_h by the same β is our choice.
        loss_beta: β in training. ``false`` (ref-code ``p32/ssim_main.py:272-276``, ``p256/ssim_main.py:252-256``):
            each model trains on its own ``ℓ_m = ρ·MAE + (1 − ρ)(1 − MS-SSIM)``. ``true`` (paper eq. 8, L117, read
            literally for two models trained apart): ``1 − (β m_G + (1 − β) m_L) = β(1 − m_G) + (1 − β)(1 − m_L)``,
            so the global model's MS-SSIM term is weighted ``(1 − ρ)β`` and the local one's ``(1 − ρ)(1 − β)``, the
            MAE left at ``ρ`` (eq. 8 does not split it). Only with the global model (β is MVTec AD's, L187).
        combine: ``beta`` (paper) or ``equal`` (ref-code: 0.5·local + 0.5·global at inference,
            ``multi_scale/inference_det.py:208-209``, ``inference_loc.py:329``).
        ssim_space: ``normalised`` = MS-SSIM and MAE on ImageNet-normalised images with L = 4.7579 (paper
            L185; MAE divided by L as the ref-code); ``unit`` = on [0, 1] images with L = 1 (an option).
        ssim_channels: how the scalar MS-SSIM (loss and score) treats colour: ``joint`` (choice: each scale's
            statistic averaged over channels, then clamped at 0 and multiplied over the scales) or
            ``per_channel`` (ref-code ``pytorch_msssim``: clamp and product per channel, then the channels'
            mean). The paper (eq. 9) is silent.
        ssim_map: the per-pixel MS-SSIM of the anomaly map (paper eq. 12 scores a patch centred at each pixel,
            L119/L141, which neither builds): ``padded`` (choice: contrast-structure maps at the finer scales and
            the SSIM map at the coarsest, reflect-padded, averaged over channels, bilinear upsampling, no clamp,
            :func:`~anomalib_lite.models.ssim.ms_ssim_map`) or ``ref`` (ref-code
            ``multi_scale/inference_loc.py:283-323``: full SSIM maps at every scale, clamped at 0, valid window
            positions only, nearest upsampling, MAE added per channel, channels merged by ``rgb2gray``'s weights
            0.2989/0.5870/0.1140). Both are ``ℓ_m`` alone, without ``ℓ_h`` (ref-code; paper L139 "the same loss
            as in (11)" defines the pixel's loss by eq. 12, ``ℓ_m`` only).
        gamma, lam: ACAI mixing of real and reconstructed images, and the generator term weight (paper L185).
        interpolation_partner: the code each code is mixed with (eq. 2): ``batch`` (ref-code
            ``p32/ssim_main.py:279``: the batch reversed, as ACAI [10]) or ``features`` (paper L72-L74 read
            literally: the code's own elements in reverse order).
        kappa, mu_min, estep_every: GSVDD σ² = κ·mean‖z − μ‖² (≥ 1) (paper L107, L185: κ = 0.5; ref-code κ = 1,
            ``sig_f = 1`` at ``p32/ssim_main.py:71``: ``model.kappa=1``), |μ_i| ≥ mu_min and E-step every 10
            epochs (ref-code ``p32/ssim_main.py:194-196, 307``). The E-step's passes, order and floor: see
            ``GaussianDescriptor.e_step``.
        xi: score weight of ℓ_m, the rest ℓ_h (paper eq. 11, L187: 0.5); with ``xi_global`` set, the local
            model's. xi_global: the global model's ξ; ``None`` = ``xi`` (paper). The ref-code's detection script
            scores the local model with ξ = 0.9 and the global one with ξ = 0.1 before its 0.5/0.5 mix
            (``multi_scale/inference_det.py:190, 206, 208-209``): ``model.xi=0.9 model.xi_global=0.1
            model.combine=equal``.
        flat_start: the decoders' last conv starts at zero weights and a mid-grey bias, a flat first
            reconstruction whose MS-SSIM with any target is positive (choice, see
            :class:`~anomalib_lite.models.igd.networks.Decoder`); ``false``: PyTorch's default init (ref-code).
        offline_backbone: the backbone a run uses instead of a torchvision one whose weights are not
            in the torch cache (resolved by ``train.py`` and recorded in the checkpoint's config). Choice: neither
            the paper nor the ref-code has one (both use ResNet18); runs with it are marked stand-in, never compared.
    """

    name: str = "igd"
    image_size: int = 32
    epochs: int = 128
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-6
    lr_power: float = 0.9
    kd_steps: int = 50_000
    kd_batch_size: int = 64
    kd_lr: float = 1e-4
    kd_weight_decay: float = 1e-5
    kd_input_size: int = 224
    freeze_encoder: bool = True
    distill: bool = True
    descriptor: str = "gaussian"
    interpolation: bool = True
    width: int = 64
    hidden: int = 512
    latent: int = 128
    local_size: int = 32
    patch_stride: int = 16
    patches_per_image: int | None = None
    micro_batch: int | None = None
    use_global: bool | None = None
    global_encoder: str = "resnet18"
    patch_fusion: str = "mean"
    hflip: bool = False
    critic_norm: str = "layer"
    decoder_norm: str = "batch"
    critic_update: str = "joint"
    critic_weight_decay: float | None = None
    rho: float = 0.15
    beta: float = 0.1
    loss_beta: bool = False
    combine: str = "beta"
    ssim_space: str = "normalised"
    ssim_channels: str = "joint"
    ssim_map: str = "padded"
    gamma: float = 0.2
    lam: float = 0.1
    interpolation_partner: str = "batch"
    kappa: float = 0.5
    mu_min: float = 0.1
    estep_every: int = 10
    xi: float = 0.5
    xi_global: float | None = None
    flat_start: bool = True
    offline_backbone: str = "tf_efficientnet_lite0"

    def __post_init__(self) -> None:
        for key in ("epochs", "width", "hidden", "latent", "patch_stride", "estep_every", "kd_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key}={getattr(self, key)} must be ≥ 1")
        if self.micro_batch is not None and self.micro_batch < 2:
            raise ValueError(f"model.micro_batch={self.micro_batch} must be ≥ 2 (or null: one pass)")
        if self.micro_batch is not None and self.critic_update != "joint":
            raise ValueError(
                f"model.micro_batch={self.micro_batch} needs model.critic_update=joint "
                f"(with {self.critic_update!r} the critic steps on the whole batch after the autoencoder)"
            )
        if self.patches_per_image is not None and self.patches_per_image < 1:
            raise ValueError(f"model.patches_per_image={self.patches_per_image} must be ≥ 1 (or null: all)")
        if self.kd_steps < 0:
            raise ValueError(f"model.kd_steps={self.kd_steps} must be ≥ 0")
        if self.image_size < self.local_size or (self.image_size - self.local_size) % self.patch_stride:
            raise ValueError(
                f"model.image_size={self.image_size} must be model.local_size={self.local_size} plus a multiple "
                f"of model.patch_stride={self.patch_stride}"
            )
        for key in ("rho", "gamma", "xi", "beta", "xi_global"):
            if getattr(self, key) is not None and not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"model.{key}={getattr(self, key)} must be in [0, 1]")
        if self.critic_weight_decay is not None and self.critic_weight_decay < 0:
            raise ValueError(f"model.critic_weight_decay={self.critic_weight_decay} must be ≥ 0 (or null)")
        for key in ("lr", "kd_lr", "kappa"):
            if getattr(self, key) <= 0:
                raise ValueError(f"model.{key}={getattr(self, key)} must be > 0")
        for key in ("weight_decay", "kd_weight_decay", "lr_power", "lam", "mu_min"):
            if getattr(self, key) < 0:
                raise ValueError(f"model.{key}={getattr(self, key)} must be ≥ 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"model.betas={self.betas} must be two numbers in [0, 1)")
        if self.kd_input_size < 32:
            raise ValueError(f"model.kd_input_size={self.kd_input_size} must be ≥ 32")
        sides = {"model.local_size": (self.local_size, "the local model's input")}
        if self.global_used:
            sides["model.image_size"] = (self.image_size, "data.image_size, the global model's input")
        for key, (side, what) in sides.items():
            if side < 4 or side & (side - 1):  # 4·2^k ⇔ a power of two ≥ 4
                raise ValueError(f"{key}={side} ({what}) must be 4·2^k (32, 64, 128, 256, …) for IGD's networks")
        if self.combine not in COMBINE:
            raise ValueError(f"model.combine={self.combine!r}; choices: {', '.join(COMBINE)}")
        if self.ssim_space not in SSIM_SPACES:
            raise ValueError(f"model.ssim_space={self.ssim_space!r}; choices: {', '.join(SSIM_SPACES)}")
        if self.descriptor not in DESCRIPTORS:
            raise ValueError(f"model.descriptor={self.descriptor!r}; choices: {', '.join(DESCRIPTORS)}")
        if self.global_encoder not in GLOBAL_ENCODERS:
            raise ValueError(f"model.global_encoder={self.global_encoder!r}; choices: {', '.join(GLOBAL_ENCODERS)}")
        if self.patch_fusion not in PATCH_FUSIONS:
            raise ValueError(f"model.patch_fusion={self.patch_fusion!r}; choices: {', '.join(PATCH_FUSIONS)}")
        choices = {
            "critic_norm": CRITIC_NORMS,
            "decoder_norm": DECODER_NORMS,
            "critic_update": CRITIC_UPDATES,
            "ssim_channels": SSIM_CHANNELS,
            "ssim_map": SSIM_MAPS,
            "interpolation_partner": INTERPOLATION_PARTNERS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"model.{key}={getattr(self, key)!r}; choices: {', '.join(allowed)}")

    @property
    def global_used(self) -> bool:
        """Whether the global model is built and trained."""
        return self.image_size > self.local_size if self.use_global is None else self.use_global

    @property
    def global_backbone(self) -> bool:
        """Whether the global model's encoder is the frozen backbone (``global_encoder=resnet18``)."""
        return self.global_used and self.global_encoder == "resnet18"

    @property
    def patch_count(self) -> int:
        """Local-model inputs per image: every ``local_size`` patch at ``patch_stride`` (1 on 32×32 images)."""
        return ((self.image_size - self.local_size) // self.patch_stride + 1) ** 2

    @property
    def distilled(self) -> bool:
        """Whether the ``distill`` stage runs (``distill`` and ``kd_steps > 0``)."""
        return self.distill and self.kd_steps > 0

    @property
    def body_frozen(self) -> bool:
        """Whether the local encoder body is fixed in the EM stage (only after a distillation)."""
        return self.freeze_encoder and self.distilled

    @property
    def global_share(self) -> float:
        """The global model's weight in the map and score: β (paper) or 0.5 (ref-code)."""
        return self.beta if self.combine == "beta" else 0.5

    @property
    def data_range(self) -> float:
        """``L`` of the SSIM constants and the MAE's divisor."""
        return NORMALISED_RANGE if self.ssim_space == "normalised" else 1.0

    @property
    def grey(self) -> float | None:
        """The decoders' first, flat reconstruction (:class:`~anomalib_lite.models.igd.networks.Decoder`):
        0.5 in [0, 1], 0 (the ImageNet mean) in normalised space; ``None`` without ``flat_start``."""
        if not self.flat_start:
            return None
        return 0.0 if self.ssim_space == "normalised" else 0.5
