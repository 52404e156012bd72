"""A guard against a TAPO run that loses its answer format.

TAPO's inter-class term rewards rollouts that the negative image makes unlikely, and its
entropy term sharpens whatever the policy does; with a small model they can outrun the 0.1
format reward (docs/tapo_experiment.md: the paper's coefficients lost the format in 2 of 4
seeds). The guard watches the mean format reward of each generation batch: when its moving
average over `window` batches has stayed below `threshold` for `patience` batches in a row,
it fires, and `TAPOTrainer` warns, and as the recipe's `format_guard` says also stops the
run ("stop") or multiplies `tapo_gamma` by `format_guard_gamma_factor` ("lower_gamma").
After firing it counts afresh, so a lowered gamma gets `patience` batches to show its effect.

    >>> guard = FormatGuard(threshold=0.5, window=2, patience=2)
    >>> [guard.update(v) for v in (1.0, 0.2, 0.2, 0.1, 0.1, 0.1)]
    [False, False, False, True, False, True]
    >>> round(guard.average, 2)
    0.1
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

ACTIONS = ("off", "warn", "stop", "lower_gamma")


@dataclass
class FormatGuard:
    """Moving average of the format reward; `update` says when it has been low for too long."""

    threshold: float = 0.5
    window: int = 5
    patience: int = 5
    values: deque = field(default_factory=deque)
    below: int = 0  # consecutive updates with the average under the threshold
    fired: int = 0  # how many times the guard fired

    def __post_init__(self) -> None:
        if self.window < 1 or self.patience < 1:
            raise ValueError(f"format guard window and patience must be >= 1 (got {self.window}, {self.patience})")
        self.values = deque(self.values, maxlen=self.window)

    @property
    def average(self) -> float:
        return sum(self.values) / len(self.values) if self.values else float("nan")

    def update(self, value: float) -> bool:
        """Record one batch's mean format reward; True when the guard fires."""
        self.values.append(value)
        self.below = self.below + 1 if self.average < self.threshold else 0
        if self.below >= self.patience:
            self.below = 0
            self.fired += 1
            return True
        return False
