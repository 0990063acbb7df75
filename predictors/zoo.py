"""Reference architectures that model configs can name (``predictors.zoo:ConvClassifier``).

Users may also ship their own module in the model directory (``model.py:MyNet``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class ConvClassifier(nn.Module):
    """A small CNN: conv blocks (3x3, ReLU, 2x2 max-pool) then a two-layer head."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 8,
        channels: tuple[int, ...] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, prev = image_size, in_channels
        for width in channels:
            layers += [
                nn.Conv2d(prev, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            prev, size = width, size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(prev * size * size, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SequenceClassifier(nn.Module):
    """An RNN/LSTM/GRU classifier over padded ``[N, T, F]`` batches with true ``lengths``.

    Sequences are packed, so padding never reaches the recurrence: each row's result is the
    same as running that sequence alone.
    """

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "lstm",
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.directions = 2 if bidirectional else 1
        self.head = nn.Linear(hidden_size * self.directions, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, hidden = self.rnn(packed)
        h = hidden[0] if isinstance(hidden, tuple) else hidden  # LSTM returns (h, c)
        last = torch.cat([h[-d - 1] for d in range(self.directions)][::-1], dim=1)
        return self.head(last)


def _mlp(sizes: list[int], activation: Callable[[], nn.Module] = nn.ReLU) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return layers


class VAE(nn.Module):
    """A fully connected variational autoencoder for small images.

    ``encode(x)`` gives the posterior's mean and log-variance, ``decode(z)`` pixels in [0, 1]
    (sigmoid); ``forward(x)`` reconstructs from the mean.
    """

    def __init__(
        self, image_shape: tuple[int, ...] = (1, 8, 8), latent_dim: int = 8, hidden: tuple[int, ...] = (256, 128)
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        pixels = math.prod(self.image_shape)
        self.encoder = nn.Sequential(*_mlp([pixels, *hidden, 2 * latent_dim]))
        self.decoder = nn.Sequential(*_mlp([latent_dim, *reversed(hidden), pixels]), nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_variance = self.encoder(x.flatten(1)).chunk(2, dim=1)
        return mean, log_variance

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *self.image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])


class MLPGenerator(nn.Module):
    """A fully connected GAN generator: latent vectors to images in [-1, 1] (tanh)."""

    def __init__(
        self, latent_dim: int = 16, image_shape: tuple[int, ...] = (1, 8, 8), hidden: tuple[int, ...] = (128, 256)
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        pixels = math.prod(self.image_shape)
        self.net = nn.Sequential(*_mlp([latent_dim, *hidden, pixels], lambda: nn.LeakyReLU(0.2)), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)
