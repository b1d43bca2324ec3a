"""One optimiser loop for every optimised bound: alpha-CROWN's slopes, beta-CROWN's split
multipliers, or both.  Every iterate is a sound bound, so the best per row is one too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from verifier.bounds.limits import Interrupted
from verifier.ops.base import Tensor


class Adam:
    """Adam (Kingma and Ba, 2015) on a growing set of tensors, updated in place with foreach
    ops.  Not torch.optim.Adam: its first use imports torch's compiler stack (1-2 s, more
    under load, and not interruptible), which a deadline or a quick first bound cannot
    afford.  Tensors added later start their own step count, as in torch's Adam."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.groups: list[dict[str, Any]] = []
        self._known: set[int] = set()

    def add(self, params: list[Tensor]) -> None:
        new = [p for p in params if p.requires_grad and id(p) not in self._known]
        if new:
            self._known.update(id(p) for p in new)
            self.groups.append({"params": new, "m": [torch.zeros_like(p) for p in new],
                                "v": [torch.zeros_like(p) for p in new], "t": 0})

    def zero_grad(self) -> None:
        for group in self.groups:
            for p in group["params"]:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for group in self.groups:
            live = [i for i, p in enumerate(group["params"]) if p.grad is not None]
            if not live:
                continue
            params = [group["params"][i] for i in live]
            grads = [p.grad for p in params]
            m = [group["m"][i] for i in live]
            v = [group["v"][i] for i in live]
            group["t"] += 1
            t = group["t"]
            torch._foreach_mul_(m, self.b1)
            torch._foreach_add_(m, grads, alpha=1 - self.b1)
            torch._foreach_mul_(v, self.b2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - self.b2)
            denom = torch._foreach_div(v, 1 - self.b2 ** t)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(params, m, denom, value=-self.lr / (1 - self.b1 ** t))


class Variables(Protocol):
    """What an optimised bound moves: tensors (made as the bound is first evaluated) and
    the projection back onto their feasible set after each step."""

    def variables(self) -> list[Tensor]: ...

    def project(self) -> None: ...


@dataclass(frozen=True)
class Ascent:
    """``steps`` Adam steps of step size ``lr`` (times ``lr_decay`` after each).
    ``early_stop``: stop once every row's best bound is > 0; ``focus``: ascend only on the
    rows not yet proven (best <= 0), else on all."""

    steps: int
    lr: float = 0.1
    lr_decay: float = 1.0
    early_stop: bool = False
    focus: bool = True


def ascend(objective: Callable[[], Tensor], moved: list[Variables], best: Tensor,
           plan: Ascent, stop: Callable[[], bool]) -> Tensor:
    """Maximise ``objective()`` (B, R), a sound lower bound for any value of the variables,
    by gradient ascent: evaluated before each step
    and after the last; returns the best bound per row of ``best`` and every evaluation.
    Stops early when ``stop()`` holds (an interrupted evaluation is dropped)."""
    opt = Adam(plan.lr)
    with torch.enable_grad():
        for step in range(plan.steps + 1):
            if stop():
                break
            last = step == plan.steps
            try:
                with torch.set_grad_enabled(not last):
                    lb = objective()
            except Interrupted:
                break
            best = torch.fmax(best, lb.detach())
            if (plan.early_stop and bool((best > 0).all())) or last:
                break
            params = [t for group in moved for t in group.variables()]
            if not params:
                break
            opt.add(params)
            opt.zero_grad()
            (-(lb[best <= 0] if plan.focus else lb).sum()).backward()
            opt.step()
            opt.lr *= plan.lr_decay
            for group in moved:
                group.project()
    return best
