"""Several optimisers stepped as one, so that a stage can train a network with one algorithm and its
discriminator with another (UTAD's IE-Net with SGD, its MI discriminator with Adam)."""

from __future__ import annotations

from typing import Any

import torch


class OptimizerChain(torch.optim.Optimizer):
    """One optimiser made of ``optimizers`` (disjoint parameter sets), for the engine's single optimiser.

    ``step``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` go to every member in order;
    ``param_groups`` are the members' own group dicts, so a learning-rate scheduler built on the chain
    scales every member's rate.

    Args:
        optimizers: at least one optimiser; no parameter may be in two of them.
    Raises:
        ValueError: no optimiser, or a parameter shared between two.
    """

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        if not optimizers:
            raise ValueError("OptimizerChain needs at least one optimiser")
        params = [p for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]]
        if len({id(p) for p in params}) != len(params):
            raise ValueError("OptimizerChain: a parameter is in two of the optimisers")
        super().__init__(params, {})
        self.optimizers = list(optimizers)
        self.param_groups = [group for optimizer in optimizers for group in optimizer.param_groups]

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        """One step of every member (closures are not supported: the members would each re-evaluate it)."""
        if closure is not None:
            raise ValueError("OptimizerChain.step takes no closure")
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every member's gradients."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """``{"optimizers": [each member's state_dict]}``."""
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore every member from :meth:`state_dict`'s output.

        Raises:
            ValueError: the state holds a different number of optimisers.
        """
        states = state_dict.get("optimizers", [])
        if len(states) != len(self.optimizers):
            raise ValueError(
                f"optimizer state holds {len(states)} optimiser(s), this chain has {len(self.optimizers)} "
                "(a checkpoint from another optimiser setting?)"
            )
        for optimizer, state in zip(self.optimizers, states):
            optimizer.load_state_dict(state)
        self.param_groups = [group for optimizer in self.optimizers for group in optimizer.param_groups]  # new dicts
