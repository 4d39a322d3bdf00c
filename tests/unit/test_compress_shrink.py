"""The compress gate's pruned and distilled networks (mlgate.compress.shrink), on small torch networks trained here.

The tabular data follow a known logistic relation on 12 features, so the MLP, its pruned copy and a distilled
student are compared by held-out ROC AUC; a small CNN on 1x8x8 inputs shows that pruning removes channels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from mlgate.compress import shrink
from mlgate.compress.contract import TorchSubject
from mlgate.config import CompressConfig, DistillConfig, PruneConfig
from mlgate.errors import ConfigError, InputError
from sklearn.metrics import roc_auc_score
from torch import nn

FEATURES = 12
TRAIN_ROWS = 2000
HOLDOUT_ROWS = 2000
BATCH = 200

Batches = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


class MLP(nn.Module):
    """Like the example project's FraudMLP: Linear -> ReLU -> Dropout per hidden layer, then one logit per row."""

    def __init__(self, n_inputs: int = FEATURES, hidden: Sequence[int] = (64, 32), dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Scrambled(nn.Module):
    """Reshapes its hidden neurons through a transpose, which torch-pruning does not follow."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(FEATURES, 16)
        self.last = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.first(x).view(-1, 4, 4).transpose(1, 2).reshape(-1, 16)
        return self.last(hidden).squeeze(-1)


def logistic_rows(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a logistic relation: the label is 1 with probability sigmoid(x @ w), w the same for every seed."""
    weights = torch.linspace(-1.5, 1.5, FEATURES)
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(rows, FEATURES, generator=generator)
    labels = torch.bernoulli(torch.sigmoid(features @ weights), generator=generator)
    return features, labels


def image_rows(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(rows, 1, 8, 8, generator=generator)
    signal = images[:, 0, :4, :4].mean(dim=(1, 2)) - images[:, 0, 4:, 4:].mean(dim=(1, 2))
    labels = torch.bernoulli(torch.sigmoid(6.0 * signal), generator=generator)
    return images, labels.unsqueeze(-1)


def batches_of(inputs: torch.Tensor, targets: torch.Tensor) -> Batches:
    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(inputs), BATCH):
            yield inputs[start : start + BATCH], targets[start : start + BATCH]

    return batches


def trained(network: nn.Module, batches: Batches, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-2)
    loss = nn.BCEWithLogitsLoss()
    network.train()
    for _ in range(epochs):
        for inputs, targets in batches():
            optimizer.zero_grad()
            loss(network(inputs), targets).backward()
            optimizer.step()
    return network.eval()


def parameters(network: nn.Module) -> int:
    return sum(parameter.numel() for parameter in network.parameters())


def auc(network: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        scores = network(features).numpy()
    return float(roc_auc_score(labels.numpy(), scores))


def subject_of(
    network: nn.Module,
    batches: Batches | None,
    *,
    loss: Any = "default",
    student: Callable[..., Any] | None = functools.partial(MLP, FEATURES),
) -> TorchSubject:
    return TorchSubject(
        network=network,
        features=np.asarray,
        outputs=lambda raw, frame: raw,
        train_batches=batches,
        loss=nn.BCEWithLogitsLoss() if loss == "default" else loss,
        student=student,
    )


@pytest.fixture(scope="module")
def tabular() -> dict[str, Any]:
    features, labels = logistic_rows(TRAIN_ROWS, seed=1)
    holdout_features, holdout_labels = logistic_rows(HOLDOUT_ROWS, seed=2)
    batches = batches_of(features, labels)
    network = trained(MLP(), batches, epochs=5)
    return {
        "network": network,
        "batches": batches,
        "example": features[:8],
        "holdout": (holdout_features, holdout_labels),
        "auc": auc(network, holdout_features, holdout_labels),
    }


@pytest.fixture(scope="module")
def images() -> dict[str, Any]:
    inputs, labels = image_rows(1000, seed=3)
    batches = batches_of(inputs, labels)
    return {"network": trained(CNN(), batches, epochs=2), "batches": batches, "example": inputs[:8]}


def settings(methods: list[str], **sections: Any) -> CompressConfig:
    return CompressConfig.model_validate({"methods": methods, **sections})


def test_pruning_an_mlp_removes_neurons_and_fine_tuning_keeps_its_auc(tabular: dict[str, Any]) -> None:
    original = tabular["network"]
    config = settings(["onnx", "prune"], prune=PruneConfig(ratio=0.5, epochs=2, lr=1e-3))

    built = shrink.networks(subject_of(original, tabular["batches"]), config, tabular["example"])

    assert [(name, methods) for name, methods, _, _ in built] == [("pruned-fp32", ["prune"])]
    _, _, pruned, notes = built[0]
    widths = [layer.out_features for layer in pruned.modules() if isinstance(layer, nn.Linear)]
    assert widths == [32, 16, 1]  # half of each hidden layer; the output layer keeps its one logit
    assert parameters(pruned) < parameters(original)
    assert pruned(tabular["example"]).shape == original(tabular["example"]).shape == (8,)
    assert not pruned.training
    pruned_auc = auc(pruned, *tabular["holdout"])
    assert abs(pruned_auc - tabular["auc"]) <= 0.05, (pruned_auc, tabular["auc"])
    assert (
        notes[0]
        == f"pruned 50% of the neurons of 2 layers: {parameters(original):,} -> {parameters(pruned):,} parameters"
    )
    assert notes[1].startswith("fine-tuned 2 epochs (loss ")


def test_pruning_a_cnn_removes_channels(images: dict[str, Any]) -> None:
    original = images["network"]
    config = settings(["prune"], prune={"ratio": 0.5, "epochs": 1})

    [(name, _, pruned, notes)] = shrink.networks(subject_of(original, images["batches"]), config, images["example"])

    assert name == "pruned-fp32"
    convolutions = [layer.out_channels for layer in pruned.modules() if isinstance(layer, nn.Conv2d)]
    assert convolutions == [8, 8]
    assert [layer.out_features for layer in pruned.modules() if isinstance(layer, nn.Linear)] == [1]
    assert parameters(pruned) < parameters(original)
    assert pruned(images["example"]).shape == original(images["example"]).shape == (8, 1)
    assert notes[0].startswith("pruned 50% of the channels of 2 layers")


def test_pruning_without_a_fine_tune_needs_no_training_data(tabular: dict[str, Any]) -> None:
    subject = subject_of(tabular["network"], None, loss=None)
    config = settings(["prune"], prune={"ratio": 0.25, "epochs": 0})

    [(name, methods, pruned, notes)] = shrink.networks(subject, config, tabular["example"])

    assert (name, methods) == ("pruned-fp32", ["prune"])
    assert [layer.out_features for layer in pruned.modules() if isinstance(layer, nn.Linear)] == [48, 24, 1]
    assert notes[1] == "not fine-tuned (compress.prune.epochs: 0)"


def test_distillation_trains_a_smaller_student_that_learns(tabular: dict[str, Any]) -> None:
    teacher = tabular["network"]
    config = settings(["distill"], distill=DistillConfig(student={"hidden": [8]}, epochs=3))

    [(name, methods, student, notes)] = shrink.networks(
        subject_of(teacher, tabular["batches"]), config, tabular["example"]
    )

    assert (name, methods) == ("distilled-fp32", ["distill"])
    assert [layer.out_features for layer in student.modules() if isinstance(layer, nn.Linear)] == [8, 1]
    assert parameters(student) < parameters(teacher)
    assert not student.training
    assert auc(student, *tabular["holdout"]) > 0.7
    assert notes[0].startswith(f"student of {parameters(student):,} parameters (the teacher's {parameters(teacher):,})")


def test_prune_then_distil_in_the_fields_order_and_the_original_is_unchanged(tabular: dict[str, Any]) -> None:
    original = tabular["network"]
    before = {name: tensor.clone() for name, tensor in original.state_dict().items()}
    config = settings(["prune", "distill"], prune={"epochs": 1}, distill={"student": {"hidden": [8]}, "epochs": 1})

    built = shrink.networks(subject_of(original, tabular["batches"]), config, tabular["example"])

    assert [(name, methods) for name, methods, _, _ in built] == [
        ("pruned-distilled-fp32", ["prune", "distill"]),
        ("distilled-fp32", ["distill"]),
    ]
    assert "distilling the original network" in built[0][3][1]
    after = original.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())
    assert not original.training
    assert all(network is not original for _, _, network, _ in built)


def test_builds_are_reproducible(tabular: dict[str, Any]) -> None:
    config = settings(["prune"], prune={"epochs": 1})
    subject = subject_of(tabular["network"], tabular["batches"])

    torch.manual_seed(123)  # the caller's random state does not reach the builds
    first = shrink.networks(subject, config, tabular["example"])[0][2].state_dict()
    torch.rand(5)
    second = shrink.networks(subject, config, tabular["example"])[0][2].state_dict()

    assert all(torch.equal(first[name], second[name]) for name in first)


def test_soft_loss_of_one_logit_is_least_at_the_teachers_and_of_several_is_kl() -> None:
    teacher = torch.tensor([-2.0, 0.5, 3.0])
    student = teacher.clone().requires_grad_(True)
    shrink.soft_loss(student, teacher, temperature=2.0).backward()
    assert student.grad is not None
    assert torch.allclose(student.grad, torch.zeros(3), atol=1e-6)  # the BCE's minimum: the teacher's probability

    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 2.0]])
    assert float(shrink.soft_loss(logits, logits, temperature=2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(shrink.soft_loss(logits.flip(-1), logits, temperature=2.0)) > 0.05


# -- expected failures -----------------------------------------------------------------------------


def test_fine_tune_without_train_batches_names_the_key_and_the_fixes(tabular: dict[str, Any]) -> None:
    with pytest.raises(InputError) as raised:
        shrink.networks(subject_of(tabular["network"], None), settings(["prune"]), tabular["example"])
    assert "mlgate_compress() returned no 'train_batches'" in raised.value.message
    assert raised.value.hint is not None
    assert "compress.prune.epochs: 0" in raised.value.hint
    assert "drop prune from compress.methods" in raised.value.hint


def test_distillation_without_a_loss_names_the_key(tabular: dict[str, Any]) -> None:
    subject = subject_of(tabular["network"], tabular["batches"], loss=None)
    config = settings(["distill"], distill={"student": {"hidden": [8]}})
    with pytest.raises(InputError, match=r"returned no 'loss'"):
        shrink.networks(subject, config, tabular["example"])


def test_distill_without_its_section_is_a_config_error(tabular: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as raised:
        shrink.networks(subject_of(tabular["network"], tabular["batches"]), settings(["distill"]), tabular["example"])
    assert raised.value.message == "mlgate.yaml: compress.methods lists distill but compress.distill is absent"
    assert raised.value.hint is not None and "compress.distill" in raised.value.hint


def test_distill_without_a_student_builder_names_the_key(tabular: dict[str, Any]) -> None:
    subject = subject_of(tabular["network"], tabular["batches"], student=None)
    config = settings(["distill"], distill={"student": {"hidden": [8]}})
    with pytest.raises(InputError, match=r"returned no 'student'"):
        shrink.networks(subject, config, tabular["example"])


def test_a_student_key_the_builder_does_not_take_names_the_setting(tabular: dict[str, Any]) -> None:
    config = settings(["distill"], distill={"student": {"widths": [8]}})
    with pytest.raises(InputError) as raised:
        shrink.networks(subject_of(tabular["network"], tabular["batches"]), config, tabular["example"])
    assert raised.value.message.startswith("compress.distill.student: ")
    assert "TypeError" in raised.value.message and "'widths'" in raised.value.message


def test_a_student_as_large_as_the_teacher_is_refused(tabular: dict[str, Any]) -> None:
    teacher = tabular["network"]
    config = settings(["distill"], distill={"student": {"hidden": [64, 32]}})
    with pytest.raises(InputError) as raised:
        shrink.networks(subject_of(teacher, tabular["batches"]), config, tabular["example"])
    count = f"{parameters(teacher):,}"
    assert raised.value.message == (
        f"compress.distill.student builds a network with {count} parameters, not fewer than the teacher's {count}"
    )
    assert raised.value.hint is not None


def test_train_batches_yielding_nothing_is_an_input_error(tabular: dict[str, Any]) -> None:
    subject = subject_of(tabular["network"], lambda: iter(()))
    with pytest.raises(InputError, match=r"\['train_batches'\]\(\) yielded no batches"):
        shrink.networks(subject, settings(["prune"]), tabular["example"])


def test_a_network_torch_pruning_cannot_follow_is_an_input_error(tabular: dict[str, Any]) -> None:
    subject = subject_of(Scrambled().eval(), tabular["batches"])
    with pytest.raises(InputError) as raised:
        shrink.networks(subject, settings(["prune"]), tabular["example"])
    assert raised.value.message.startswith("prune: torch-pruning cannot prune the network")
    assert "RuntimeError" in raised.value.message
    assert raised.value.hint == "drop prune from compress.methods"


def test_a_network_with_nothing_to_prune_is_an_input_error(tabular: dict[str, Any]) -> None:
    subject = subject_of(nn.Linear(FEATURES, 1).eval(), tabular["batches"])
    with pytest.raises(InputError, match=r"torch-pruning removed nothing from the network \(13 parameters\)"):
        shrink.networks(subject, settings(["prune"]), tabular["example"])
