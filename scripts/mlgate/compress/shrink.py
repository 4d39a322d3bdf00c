"""Smaller torch networks of a candidate: structured pruning and knowledge distillation, each trained briefly.

Runs in the project venv, called by the worker before export. Pruning is structured (torch-pruning removes
whole neurons and channels, and every layer that depends on them), so the result is a smaller dense network
that runs faster on a CPU; unstructured magnitude pruning only zeroes weights inside the same dense matrices,
which gives no CPU speed, and is not offered. Distillation trains the project's own student on the teacher's
softened outputs. Every build runs on the CPU with torch seeded, on copies: the candidate's network is never
changed.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mlgate.compress.contract import CONTRACT_METHOD, TorchSubject
from mlgate.config import CompressConfig, DistillConfig, PruneConfig
from mlgate.errors import ConfigError, InputError

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (output, inputs, targets) -> loss
Built = tuple[str, list[str], nn.Module, list[str]]
_PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd)
SEED = 0


def networks(subject: TorchSubject, settings: CompressConfig, example: torch.Tensor) -> list[Built]:
    """Pruned and distilled networks, in the field's order prune -> distil; each (name, methods, network in eval
    mode on CPU, notes)."""
    methods = settings.methods
    prune = settings.prune or PruneConfig()
    distill = settings.distill
    wants_prune, wants_distill = "prune" in methods, "distill" in methods
    if not wants_prune and not wants_distill:
        return []
    _check_contract(subject, wants_prune, wants_distill, prune, distill)
    teacher: nn.Module = subject.network
    example = example.detach().to("cpu").clone()
    built: list[Built] = []
    was_training = teacher.training
    teacher.eval()
    try:
        if wants_prune:
            built.append(_pruned(subject, teacher, prune, distill if wants_distill else None, example))
        if wants_distill:
            assert distill is not None  # _check_contract raised otherwise
            built.append(_distilled(subject, teacher, distill, example))
    finally:
        teacher.train(was_training)
    return built


def _check_contract(
    subject: TorchSubject, wants_prune: bool, wants_distill: bool, prune: PruneConfig, distill: DistillConfig | None
) -> None:
    if wants_distill and distill is None:
        raise ConfigError(
            "mlgate.yaml: compress.methods lists distill but compress.distill is absent",
            hint="add compress.distill: {student: {<keyword arguments of the project's student builder>}}, "
            "or drop distill from compress.methods",
        )
    trains = wants_distill or prune.epochs > 0
    missing = [key for key in ("train_batches", "loss") if getattr(subject, key) is None]
    if trains and missing:
        asked = " and ".join(
            method for method, wanted in (("prune", wants_prune), ("distill", wants_distill)) if wanted
        )
        keys = " and ".join(repr(key) for key in missing)
        fixes = ["add them to what mlgate_compress() returns (docs/compress.md)"]
        if wants_prune:
            fixes.append("set compress.prune.epochs: 0 to prune without a fine-tune")
        fixes.append(f"drop {asked} from compress.methods")
        raise InputError(
            f"compress.methods lists {asked}, which trains the network, but {CONTRACT_METHOD}() returned no {keys}",
            hint="; or ".join(fixes),
        )
    if wants_distill and subject.student is None:
        raise InputError(
            f"compress.methods lists distill but {CONTRACT_METHOD}() returned no 'student' (the builder of the "
            "smaller network that compress.distill.student configures)",
            hint="return 'student': a callable taking compress.distill.student's keys and returning a torch.nn.Module, "
            "or drop distill from compress.methods",
        )


# -- pruning ---------------------------------------------------------------------------------------


def _pruned(
    subject: TorchSubject, teacher: nn.Module, prune: PruneConfig, distill: DistillConfig | None, example: torch.Tensor
) -> Built:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        network = copy.deepcopy(teacher).to("cpu").eval()
        for parameter in network.parameters():
            parameter.requires_grad_(True)
        reference = _output(teacher, example)
        before_widths = _widths(network)
        before_parameters = _parameters(network)
        output_layer = _output_layer(network, example)
        _prune_structured(network, example, prune.ratio, output_layer)
        try:
            pruned_output = _output(network, example)
        except Exception as error:  # a dependency torch-pruning did not see leaves mismatched shapes
            raise InputError(
                "prune: torch-pruning cannot prune the network: the pruned network fails on the feature matrix "
                f"({type(error).__name__}: {_first_line(error)}); its forward reshapes or mixes neurons in a way "
                "torch-pruning does not follow",
                hint="drop prune from compress.methods",
            ) from None
        after_widths = _widths(network)
        shrunk = [name for name, width in before_widths.items() if after_widths.get(name, width) < width]
        after_parameters = _parameters(network)
        if not shrunk or after_parameters >= before_parameters:
            raise InputError(
                f"prune: torch-pruning removed nothing from the network ({before_parameters:,} parameters); its only "
                "prunable layers are the output layer or layers it cannot shrink",
                hint="drop prune from compress.methods (distill a smaller student instead)",
            )
        if pruned_output.shape != reference.shape:
            raise InputError(
                f"prune: the pruned network's output has the shape {tuple(pruned_output.shape)}, the original's "
                f"{tuple(reference.shape)}; torch-pruning shrank a layer the output depends on",
                hint="drop prune from compress.methods",
            )
        removed = sum(before_widths[name] - after_widths[name] for name in shrunk)
        share = removed / sum(before_widths[name] for name in shrunk)
        units = _unit_word(network, shrunk)
        notes = [
            f"pruned {share:.0%} of the {units} of {len(shrunk)} layer{'s' if len(shrunk) != 1 else ''}: "
            f"{before_parameters:,} -> {after_parameters:,} parameters"
        ]
        if prune.epochs == 0:
            notes.append("not fine-tuned (compress.prune.epochs: 0)")
            return "pruned-fp32", ["prune"], network.eval(), notes
        if distill is None:
            losses = _train(network, subject, _project_objective(subject), prune.epochs, prune.lr)
            notes.append(f"fine-tuned {_epochs(prune.epochs)} ({_loss_path('loss', losses)})")
            return "pruned-fp32", ["prune"], network.eval(), notes
        objective = _distill_objective(subject, teacher, distill)
        losses = _train(network, subject, objective, prune.epochs, prune.lr)
        notes.append(
            f"fine-tuned {_epochs(prune.epochs)} distilling the original network "
            f"(T={distill.temperature:g}, alpha={distill.alpha:g}; {_loss_path('distillation loss', losses)})"
        )
        return "pruned-distilled-fp32", ["prune", "distill"], network.eval(), notes


def _prune_structured(network: nn.Module, example: torch.Tensor, ratio: float, output_layer: nn.Module) -> None:
    try:
        tp: Any = importlib.import_module("torch_pruning")
    except ImportError:
        raise InputError(
            "compress.methods lists prune, which needs torch-pruning, and the project venv does not have it",
            hint="add torch-pruning to the project's requirements, or drop prune from compress.methods",
        ) from None
    try:
        with torch.enable_grad():  # torch-pruning traces the graph through autograd
            pruner = tp.pruner.BasePruner(
                network,
                example,
                importance=tp.importance.MagnitudeImportance(p=2),
                pruning_ratio=ratio,
                ignored_layers=[output_layer],
            )
            pruner.step()
    except Exception as error:  # torch-pruning raises many kinds for a graph it cannot follow
        raise InputError(
            f"prune: torch-pruning cannot prune the network: {type(error).__name__}: {_first_line(error)}",
            hint="drop prune from compress.methods (int8 and distill do not trace the network's dependencies)",
        ) from None


def _output_layer(network: nn.Module, example: torch.Tensor) -> nn.Module:
    """The last Linear or Conv layer the forward pass runs: its width is the network's output and stays."""
    called: list[nn.Module] = []
    handles = [
        module.register_forward_hook(lambda module, _inputs, _output: called.append(module))
        for module in network.modules()
        if isinstance(module, _PRUNABLE)
    ]
    try:
        _output(network, example)
    finally:
        for handle in handles:
            handle.remove()
    if called:
        return called[-1]
    layers = [module for module in network.modules() if isinstance(module, _PRUNABLE)]
    if not layers:
        raise InputError(
            "prune: the network has no Linear or Conv layer, which structured pruning removes neurons and channels of",
            hint="drop prune from compress.methods",
        )
    return layers[-1]


def _widths(network: nn.Module) -> dict[str, int]:
    widths: dict[str, int] = {}
    for name, module in network.named_modules():
        if isinstance(module, nn.Linear):
            widths[name] = module.out_features
        elif isinstance(module, nn.modules.conv._ConvNd):
            widths[name] = module.out_channels
    return widths


def _unit_word(network: nn.Module, names: list[str]) -> str:
    modules = dict(network.named_modules())
    convs = sum(isinstance(modules[name], nn.modules.conv._ConvNd) for name in names)
    if convs == 0:
        return "neurons"
    return "channels" if convs == len(names) else "neurons and channels"


# -- distillation ----------------------------------------------------------------------------------


def _distilled(subject: TorchSubject, teacher: nn.Module, distill: DistillConfig, example: torch.Tensor) -> Built:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        student = _student(subject, distill)
        teacher_parameters, student_parameters = _parameters(teacher), _parameters(student)
        if student_parameters >= teacher_parameters:
            raise InputError(
                f"compress.distill.student builds a network with {student_parameters:,} parameters, not fewer than "
                f"the teacher's {teacher_parameters:,}",
                hint="make the student smaller (fewer or narrower layers) in compress.distill.student",
            )
        expected = _output(teacher, example)
        try:
            got = _output(student, example)
        except Exception as error:  # the project's network, any error it raises
            raise InputError(
                f"compress.distill.student builds a network that fails on the feature matrix: "
                f"{type(error).__name__}: {_first_line(error)}",
                hint="the student must take the same input as the network of mlgate_compress()",
            ) from None
        if got.shape != expected.shape:
            raise InputError(
                f"compress.distill.student builds a network whose output has the shape {tuple(got.shape)}, the "
                f"teacher's {tuple(expected.shape)}",
                hint="the student must return what the network of mlgate_compress() returns (same outputs per row)",
            )
        losses = _train(student, subject, _distill_objective(subject, teacher, distill), distill.epochs, distill.lr)
        notes = [
            f"student of {student_parameters:,} parameters (the teacher's {teacher_parameters:,}), trained "
            f"{_epochs(distill.epochs)} (T={distill.temperature:g}, alpha={distill.alpha:g}; "
            f"{_loss_path('distillation loss', losses)})"
        ]
        return "distilled-fp32", ["distill"], student.eval(), notes


def _student(subject: TorchSubject, distill: DistillConfig) -> nn.Module:
    assert subject.student is not None  # _check_contract raised otherwise
    try:
        student = subject.student(**distill.student)
    except Exception as error:  # the project's builder; a TypeError is a wrong key
        raise InputError(
            f"compress.distill.student: {CONTRACT_METHOD}()['student'](**{distill.student!r}) raised "
            f"{type(error).__name__}: {_first_line(error)}",
            hint="give compress.distill.student the keyword arguments the project's student builder takes",
        ) from None
    if not isinstance(student, nn.Module):
        raise InputError(
            f"compress.distill.student: {CONTRACT_METHOD}()['student'] returned a {type(student).__name__}, not a "
            "torch.nn.Module",
            hint="return a torch.nn.Module from the student builder",
        )
    return student.to("cpu")


def soft_loss(student_output: torch.Tensor, teacher_output: torch.Tensor, temperature: float) -> torch.Tensor:
    """The student's loss against the teacher's softened outputs: binary cross entropy for a single logit per
    row (1-D, or a last dimension of 1), KL divergence of the softmaxes for several."""
    if student_output.ndim == 1 or student_output.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(
            student_output / temperature, torch.sigmoid(teacher_output / temperature)
        )
    return F.kl_div(
        F.log_softmax(student_output / temperature, dim=-1),
        F.softmax(teacher_output / temperature, dim=-1),
        reduction="batchmean",
    )


def _distill_objective(subject: TorchSubject, teacher: nn.Module, distill: DistillConfig) -> Objective:
    hard_loss = _project_objective(subject)
    alpha, temperature = distill.alpha, distill.temperature

    def objective(output: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_output = teacher(inputs)
        soft = soft_loss(output, teacher_output, temperature)
        return alpha * hard_loss(output, inputs, targets) + (1.0 - alpha) * temperature**2 * soft

    return objective


# -- training --------------------------------------------------------------------------------------


def _project_objective(subject: TorchSubject) -> Objective:
    loss = subject.loss
    assert loss is not None  # _check_contract raised otherwise

    def objective(output: torch.Tensor, _inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        try:
            value = loss(output, targets)
        except Exception as error:  # the project's loss, any error it raises
            raise InputError(
                f"{CONTRACT_METHOD}()['loss'] failed on a batch of train_batches: {type(error).__name__}: "
                f"{_first_line(error)}",
                hint="the loss takes (the network's output, the batch's targets) and returns a scalar tensor",
            ) from None
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise InputError(
                f"{CONTRACT_METHOD}()['loss'] returned {type(value).__name__}"
                f"{f' of shape {tuple(value.shape)}' if isinstance(value, torch.Tensor) else ''}, not a scalar tensor",
                hint="return the batch's mean loss as a 0-d tensor (e.g. torch.nn.BCEWithLogitsLoss())",
            )
        return value

    return objective


def _batches(subject: TorchSubject) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    assert subject.train_batches is not None  # _check_contract raised otherwise
    try:
        for inputs, targets in subject.train_batches():
            yield torch.as_tensor(inputs).to("cpu"), torch.as_tensor(targets).to("cpu")
    except InputError:
        raise
    except Exception as error:  # the project's data loading, any error it raises
        raise InputError(
            f"{CONTRACT_METHOD}()['train_batches'] failed: {type(error).__name__}: {_first_line(error)}",
            hint="train_batches() returns one epoch of (inputs, targets) tensor pairs of the training data",
        ) from None


def _train(network: nn.Module, subject: TorchSubject, objective: Objective, epochs: int, lr: float) -> list[float]:
    """Train `network` for `epochs` epochs of train_batches with AdamW; the mean loss of each epoch."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr)
    network.train()
    means: list[float] = []
    with torch.enable_grad():
        for _epoch in range(epochs):
            total, count = 0.0, 0
            for inputs, targets in _batches(subject):
                optimizer.zero_grad()
                loss = objective(network(inputs), inputs, targets)
                torch.autograd.backward(loss)
                optimizer.step()
                total += float(loss.detach())
                count += 1
            if count == 0:
                raise InputError(
                    f"{CONTRACT_METHOD}()['train_batches']() yielded no batches; pruning's fine-tune and "
                    "distillation train on them",
                    hint="make train_batches() yield (inputs, targets) pairs of the training data (one epoch per call)",
                )
            means.append(total / count)
    network.eval()
    return means


# -- small helpers ---------------------------------------------------------------------------------


def _output(network: nn.Module, example: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        output = network(example)
    if not isinstance(output, torch.Tensor):
        raise InputError(
            f"the network returns a {type(output).__name__}, not a tensor; prune and distill train on one output",
            hint="return one tensor from the network's forward, or drop prune and distill from compress.methods",
        )
    return output


def _parameters(network: nn.Module) -> int:
    return int(sum(parameter.numel() for parameter in network.parameters()))


def _epochs(count: int) -> str:
    return f"{count} epoch{'s' if count != 1 else ''}"


def _loss_path(what: str, losses: list[float]) -> str:
    return f"{what} {losses[0]:.3f}" if len(losses) == 1 else f"{what} {losses[0]:.3f} -> {losses[-1]:.3f}"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:240]
