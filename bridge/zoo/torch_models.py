"""PyTorch builders of the zoo. Each takes no arguments and returns an eval-mode module.

Weights come from ``torch.manual_seed(0)``. Models with BatchNorm are calibrated first: a few
train-mode forward passes on seeded random data give the running statistics real values, since
an untrained net with default statistics (mean 0, variance 1) can produce outputs so close to
zero that every comparison passes whatever the converter did.

The forward arguments are named as the registry's inputs, because torch.export keeps the names.
"""

from __future__ import annotations

import torch
from torch import nn

SEED = 0
CALIBRATION_STEPS = 4


def _seeded() -> None:
    torch.manual_seed(SEED)


@torch.no_grad()
def calibrate(model: nn.Module, shape: tuple[int, ...], steps: int = CALIBRATION_STEPS) -> nn.Module:
    """Fill BatchNorm running statistics from `steps` train-mode passes, then switch to eval.

    Momentum is set to None (a cumulative average) while calibrating so that the statistics are
    the mean over the passes rather than 10 % of the way from the defaults; it is restored after.
    """
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(steps):
        model(torch.randn(shape, generator=generator))
    for m, momentum in zip(norms, momenta, strict=False):
        m.momentum = momentum
    return model.eval()


class MLP(nn.Module):
    """10 -> 64 -> 1."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """MNIST-shaped classifier: [N, 1, 28, 28] -> [N, 10]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 7 * 7, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus the identity, then ReLU (ResNet's basic block, no downsampling)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(channels, channels), nn.ReLU(), *_conv_bn(channels, channels))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + x)


class ResNetBlock(nn.Module):
    """A conv stem to 16 channels (the identity needs matching channels), a basic block, pool, Linear 10."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 16), nn.ReLU())
        self.block = BasicBlock(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


def _separable(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [
        *_conv_bn(cin, cin, 3, stride, groups=cin), nn.ReLU6(),
        *_conv_bn(cin, cout, 1), nn.ReLU6(),
    ]


class MobileNetBlock(nn.Module):
    """A conv stem, three depthwise-separable blocks (16 -> 32 -> 64 -> 64), pool, Linear 10."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(3, 16, 3, 2), nn.ReLU6(),
            *_separable(16, 32, 1), *_separable(32, 64, 2), *_separable(64, 64, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class TransformerClassifier(nn.Module):
    """Embedding (vocab 100, d 32), one post-norm encoder layer with a padding mask, masked mean, 4 classes."""

    def __init__(self, vocab: int = 100, d_model: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.encoder = nn.TransformerEncoderLayer(
            d_model=d_model, nhead=4, dim_feedforward=64, dropout=0.1,
            activation="gelu", batch_first=True, norm_first=False,
        )
        self.fc = nn.Linear(d_model, 4)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        padding = tokens == 0
        hidden = self.encoder(self.embed(tokens), src_key_padding_mask=padding)
        keep = (~padding).unsqueeze(-1).to(hidden.dtype)
        # Mean over real tokens only; the clamp keeps an all-padding row finite.
        pooled = (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
        return self.fc(pooled)


class RecurrentClassifier(nn.Module):
    """LSTM or GRU (8 -> 16, batch_first) over [N, 12, 8]; the last step -> Linear 3."""

    def __init__(self, cell: type[nn.LSTM] | type[nn.GRU]) -> None:
        super().__init__()
        self.rnn = cell(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class Conv1dNet(nn.Module):
    """[N, 4, T] -> [N, 8, T]: the output keeps rank 3, so its layout permutation matters."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 8, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TwoInTwoOut(nn.Module):
    """(image [N,3,16,16], features [N,5]) -> (logits [N,4], feature map [N,2,16,16])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 + 5, 4)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = torch.relu(self.conv(image))
        logits = self.fc(torch.cat([fmap.mean(dim=(2, 3)), features], dim=1))
        return logits, fmap


class EmbeddingBag(nn.Module):
    """Embedding(50, 16) over int64 ids, mean over tokens, Linear 2."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.fc = nn.Linear(16, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(ids).mean(dim=1))


class SmallCNN(nn.Module):
    """[N, 3, 16, 16] -> [N, 5]; shape-agnostic in N, for the dynamic-batch case."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def build_mlp() -> nn.Module:
    """The ``mlp`` zoo model."""
    _seeded()
    return MLP().eval()


def build_cnn() -> nn.Module:
    """The ``cnn`` zoo model."""
    _seeded()
    return CNN().eval()


def build_resnet_block() -> nn.Module:
    """The ``resnet_block`` zoo model, BatchNorm calibrated."""
    _seeded()
    return calibrate(ResNetBlock(), (8, 3, 32, 32))


def build_mobilenet_block() -> nn.Module:
    """The ``mobilenet_block`` zoo model, BatchNorm calibrated."""
    _seeded()
    return calibrate(MobileNetBlock(), (8, 3, 32, 32))


def build_transformer() -> nn.Module:
    """The ``transformer`` zoo model."""
    _seeded()
    return TransformerClassifier().eval()


def build_lstm() -> nn.Module:
    """The ``lstm`` zoo model."""
    _seeded()
    return RecurrentClassifier(nn.LSTM).eval()


def build_gru() -> nn.Module:
    """The ``gru`` zoo model."""
    _seeded()
    return RecurrentClassifier(nn.GRU).eval()


def build_conv1d() -> nn.Module:
    """The ``conv1d`` zoo model."""
    _seeded()
    return Conv1dNet().eval()


def build_two_io() -> nn.Module:
    """The ``two_io`` zoo model."""
    _seeded()
    return TwoInTwoOut().eval()


def build_embedding() -> nn.Module:
    """The ``embedding`` zoo model."""
    _seeded()
    return EmbeddingBag().eval()


def build_dynamic_batch() -> nn.Module:
    """The ``dynamic_batch`` zoo model."""
    _seeded()
    return SmallCNN().eval()


def build_resnet18() -> nn.Module:
    """The ``resnet18`` zoo model: torchvision's, random weights, BatchNorm calibrated."""
    from torchvision.models import resnet18

    _seeded()
    return calibrate(resnet18(weights=None, num_classes=1000), (4, 3, 224, 224))


def build_mobilenet_v3_small() -> nn.Module:
    """The ``mobilenet_v3_small`` zoo model: torchvision's, random weights, BatchNorm calibrated."""
    from torchvision.models import mobilenet_v3_small

    _seeded()
    return calibrate(mobilenet_v3_small(weights=None), (4, 3, 224, 224))
