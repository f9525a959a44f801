"""UTAD's OptimizerChain: two optimisers stepped as one, resumable from its state, scaled by one scheduler."""

from __future__ import annotations

import pytest
import torch

from anomalib_lite.models.utad.optimizer import OptimizerChain


def _chain(a: torch.nn.Module, b: torch.nn.Module) -> OptimizerChain:
    sgd = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    return OptimizerChain(sgd, torch.optim.Adam(b.parameters(), lr=0.01))


def _train(a, b, optimizers, steps, start=0):
    """``steps`` steps of ``‖a(x)‖² + ‖b(x)‖²`` (x = step number), each stepping every optimiser given."""
    for i in range(start, start + steps):
        x = torch.full((2, 3), float(i + 1))
        for optimizer in optimizers:
            optimizer.zero_grad()
        (a(x).pow(2).sum() + b(x).pow(2).sum()).backward()
        for optimizer in optimizers:
            optimizer.step()


def test_a_chain_steps_each_member_as_that_optimiser_alone_would():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    a_alone, b_alone = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    a_alone.load_state_dict(a.state_dict())
    b_alone.load_state_dict(b.state_dict())
    _train(a, b, [_chain(a, b)], 5)
    sgd = torch.optim.SGD(a_alone.parameters(), lr=0.1, momentum=0.9)
    adam = torch.optim.Adam(b_alone.parameters(), lr=0.01)
    _train(a_alone, b_alone, [sgd, adam], 5)
    for mine, alone in ((a, a_alone), (b, b_alone)):
        assert all(torch.equal(p, q) for p, q in zip(mine.parameters(), alone.parameters()))


def test_a_chain_resumes_from_its_state_and_one_scheduler_scales_every_member():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    a2, b2 = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    a2.load_state_dict(a.state_dict())
    b2.load_state_dict(b.state_dict())
    chain = _chain(a, b)
    _train(a, b, [chain], 6)
    resumed = _chain(a2, b2)
    _train(a2, b2, [resumed], 3)
    state = resumed.state_dict()
    resumed = _chain(a2, b2)
    resumed.load_state_dict(state)  # momentum and Adam moments come back
    _train(a2, b2, [resumed], 3, start=3)
    uninterrupted, interrupted = [*a.parameters(), *b.parameters()], [*a2.parameters(), *b2.parameters()]
    assert all(torch.equal(p, q) for p, q in zip(uninterrupted, interrupted))
    scheduler = torch.optim.lr_scheduler.StepLR(resumed, step_size=1, gamma=0.5)
    resumed.step()
    scheduler.step()
    assert [o.param_groups[0]["lr"] for o in resumed.optimizers] == [0.05, 0.005]
    with pytest.raises(ValueError, match="holds 1"):
        resumed.load_state_dict({"optimizers": [state["optimizers"][0]]})
    with pytest.raises(ValueError, match="two of the optimisers"):
        OptimizerChain(torch.optim.SGD(a.parameters(), lr=1), torch.optim.SGD(a.parameters(), lr=1))
