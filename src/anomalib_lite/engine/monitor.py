"""Loss terms and gradient health of one training epoch, kept on the device and read at intervals.

On CUDA, reading a tensor's value (``float(t)``, ``t.item()``) makes the host wait for the
device. :class:`StepMonitor` therefore sums the loss terms on the device and keeps one
device-side flag of "something was non-finite"; the host reads it only at :meth:`check`
(every ``trainer.log_every`` steps and at the end of the epoch). On detection it goes back
through the steps since the last check and names the first bad one: its loss terms, else
the parameters whose gradients were non-finite.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from anomalib_lite.errors import TrainingError


def gradient_norms(parameters: list[nn.Parameter]) -> tuple[list[int], torch.Tensor]:
    """The 2-norm of each parameter's gradient, in one fused call.

    Returns:
        ``(indices, norms)``: the positions in ``parameters`` that have a gradient, and their
        norms as a float32 vector on the parameters' device (empty when none has one).
    """
    indices = [i for i, p in enumerate(parameters) if p.grad is not None]
    if not indices:
        return indices, torch.zeros(0)
    norms = torch._foreach_norm([parameters[i].grad for i in indices])
    return indices, torch.stack([n.float() for n in norms])


def clip_gradients(parameters: list[nn.Parameter], norms: torch.Tensor, max_norm: float) -> None:
    """Scale the gradients so that their total 2-norm (from :func:`gradient_norms`) is at most ``max_norm``."""
    if norms.numel():
        total = torch.linalg.vector_norm(norms)
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total)


class StepMonitor:
    """Sums of the loss terms and a non-finite flag over one epoch, without a host sync per step.

    Args:
        stage: the stage's name. epoch: the epoch number shown in messages (from 1).
        parameter_names: names of the stage's parameters, in the order of ``Stage.parameters``.
        device: where the terms and gradients live.
    """

    def __init__(self, stage: str, epoch: int, parameter_names: list[str], device: torch.device) -> None:
        self.stage, self.epoch, self.parameter_names = stage, epoch, parameter_names
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self._bad = torch.zeros((), dtype=torch.bool, device=device)
        self._since_check: list[tuple[int, dict[str, torch.Tensor], list[int], torch.Tensor]] = []

    def record(self, step: int, terms: dict[str, torch.Tensor], grad_indices: list[int], grad_norms: torch.Tensor):
        """Add one step's loss terms (scalars) and gradient norms (see :func:`gradient_norms`); no host sync."""
        values = {name: value.detach().float() for name, value in terms.items()}
        for name, value in values.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        finite = torch.isfinite(torch.stack(list(values.values()))).all() & torch.isfinite(grad_norms).all()
        self._bad |= ~finite
        self._since_check.append((step, values, grad_indices, grad_norms))
        self.steps += 1

    def check(self) -> float | None:
        """Read the flag (one host sync); return the last step's loss, or ``None`` before any step.

        Raises:
            TrainingError: a loss term or a gradient was NaN/inf since the last check; the message
                names the stage, epoch and step, and the terms or parameters.
        """
        if not self._since_check:
            return None
        if bool(self._bad):
            self._raise_first_bad()
        last = self._since_check[-1][1]["loss"]
        self._since_check.clear()
        return float(last)

    def means(self) -> dict[str, float]:
        """:meth:`check`, then each term's mean over the epoch's steps (one host read for all terms)."""
        self.check()
        if not self.sums:
            return {}
        totals = torch.stack(list(self.sums.values())).tolist()
        return {name: total / self.steps for name, total in zip(self.sums, totals)}

    def _raise_first_bad(self) -> None:
        for step, values, indices, norms in self._since_check:
            where = f"stage '{self.stage}', epoch {self.epoch}"
            terms = [f"term '{name}' = {float(v)}" for name, v in values.items() if not math.isfinite(float(v))]
            if terms:
                raise TrainingError(
                    f"Non-finite loss in {where}: {', '.join(terms)} (step {step + 1}). "
                    "Lower the learning rate or enable trainer.grad_clip."
                )
            names = [self.parameter_names[i] for i, norm in zip(indices, norms.tolist()) if not math.isfinite(norm)]
            if names:
                raise TrainingError(
                    f"Non-finite gradient in {where} (step {step + 1}) of parameter(s) {', '.join(names)}. "
                    "Lower the learning rate or enable trainer.grad_clip."
                )
