"""The noop contender's model: the same maas server stack, a model that does nothing.

``FirstElement`` returns each row's first input element as every logit, so the response has the
real model's shape and goes through the same softmax, encoding and transport as the real one.
"""

from __future__ import annotations

import torch
from torch import nn


class FirstElement(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :1].expand(-1, self.num_classes)
