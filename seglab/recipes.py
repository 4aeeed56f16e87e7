"""Recipes: the experiment schema, loading with `FILE:LINE` errors, `extends:`, ablation grids.

A recipe file holds one base experiment plus an optional ``ablate:`` block of named axes,
each with named levels that are dotted overrides. The grid is the cartesian product of the
axes (in file order); each cell is a :class:`Variant` named ``axis=level,axis=level``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seglab.errors import UnknownNameError, did_you_mean
from seglab.yamlpos import (
    ConfigError,
    KeyPath,
    Located,
    Problem,
    dotted,
    load_file,
    submodel,
    validation_problems,
)

DEFAULT_VARIANT = "default"
_SHM = re.compile(r"^[1-9][0-9]*[kmgKMG]?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelConfig(_Section):
    """The network: DeepLabV3 or DeepLabV3+ on a torchvision ResNet."""

    arch: Literal["deeplabv3", "deeplabv3plus"] = "deeplabv3plus"
    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet50"
    output_stride: Literal[8, 16] = 16
    aux_loss: bool = False
    pretrained_backbone: str | None = Field(
        default=None,
        description="local weights file (absolute, or relative to TORCH_HOME); none: random init",
    )


class SyntheticConfig(_Section):
    """The synthetic dataset: random shapes on textured backgrounds."""

    train_size: int = Field(default=256, gt=0)
    val_size: int = Field(default=32, gt=0)
    image_size: list[int] = Field(default=[64, 64], min_length=2, max_length=2)
    num_classes: int = Field(default=4, ge=2, le=255)


class DataConfig(_Section):
    """The dataset and its train-time transforms."""

    dataset: Literal["cityscapes", "ade20k", "voc", "synthetic"]
    root: str | None = Field(
        default=None,
        description="dataset root as a name resolved per host (hosts.yaml `datasets:`); "
        "defaults to the dataset name",
    )
    crop: list[int] = Field(min_length=2, max_length=2)
    scale_range: list[float] = Field(default=[0.5, 2.0], min_length=2, max_length=2)
    hflip: bool = True
    workers: int = Field(default=4, ge=0)
    synthetic: SyntheticConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if any(v <= 0 for v in self.crop):
            raise ValueError("crop: height and width must be positive")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range: need 0 < low <= high, got [{low}, {high}]")
        if self.synthetic is not None and self.dataset != "synthetic":
            raise ValueError("synthetic: only valid with dataset: synthetic")
        return self

    @property
    def root_name(self) -> str:
        """The per-host dataset name this recipe needs."""
        return self.root or self.dataset


class OptimizerConfig(_Section):
    """SGD (momentum, weight decay) or AdamW."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=1e-4, ge=0)
    nesterov: bool = False
    betas: list[float] = Field(default=[0.9, 0.999], min_length=2, max_length=2)


class ScheduleConfig(_Section):
    """Learning-rate schedule, stepped every iteration."""

    name: Literal["poly", "constant"] = "poly"
    power: float = Field(default=0.9, gt=0)
    min_lr: float = Field(default=0.0, ge=0)
    warmup_iters: int = Field(default=0, ge=0)
    warmup_ratio: float = Field(default=0.1, gt=0, le=1)


class TrainConfig(_Section):
    """The optimisation loop. `batch_size` is the global batch, split across ranks."""

    epochs: int | None = Field(default=None, gt=0)
    iterations: int | None = Field(default=None, gt=0)
    batch_size: int = Field(gt=0)
    val_batch_size: int = Field(default=1, gt=0)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    amp: Literal["none", "fp16", "bf16"] = "none"
    channels_last: bool = False
    cudnn_benchmark: bool = True
    compile: bool = False
    aux_weight: float = Field(default=0.4, ge=0)
    eval_interval: int = Field(default=1, gt=0)
    eval_unit: Literal["epoch", "iter"] = "epoch"
    checkpoint_interval: int = Field(default=500, gt=0, description="iterations")
    log_interval: int = Field(default=10, gt=0, description="iterations")
    grad_clip: float | None = Field(default=None, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if (self.epochs is None) == (self.iterations is None):
            raise ValueError("give exactly one of epochs or iterations")
        return self


class ResourcesConfig(_Section):
    """What one run of this recipe holds."""

    gpus: int = Field(
        default=1, ge=1, le=64, description="GPUs per run (per member when nodes > 1)"
    )
    nodes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="hosts one run spans, joined by "
        "torchrun's c10d rendezvous (needs network: host)",
    )
    node_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="multi-node: how long members wait for each other before the run fails",
    )
    shm_size: str = "8g"
    network: bool | Literal["host"] = Field(
        default=False,
        description="false: no network; true: a bridge network; host: the "
        "host's network (multi-node runs only)",
    )
    memory: str | None = None
    cpus: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _sizes(self) -> ResourcesConfig:
        for key in ("shm_size", "memory"):
            value = getattr(self, key)
            if value is not None and not _SHM.match(value):
                raise ValueError(f"{key}: expected a size such as 8g or 512m, got {value!r}")
        if self.nodes > 1 and self.network != "host":
            raise ValueError(
                "nodes: a run over several hosts needs `network: host` (the "
                "ranks reach each other over the hosts' own interfaces; see "
                "docs/scaling.md)"
            )
        if self.network == "host" and self.nodes == 1:
            raise ValueError(
                "network: host networking is only for multi-node runs "
                "(nodes > 1); use true for a bridge network"
            )
        return self

    @property
    def world_size(self) -> int:
        """Training processes of one run: ``gpus`` per member times ``nodes``."""
        return self.gpus * self.nodes


def _cross_field_problems(
    crop: Any, stride: Any, batch: Any, gpus: Any, nodes: Any = 1
) -> list[tuple[str, str]]:
    """Checks across sections, as (key, message); values of the wrong type are skipped."""
    out = []
    ints = isinstance(crop, list) and all(isinstance(v, int) for v in crop) and stride in (8, 16)
    if ints and any(v % stride for v in crop):
        out.append(("data.crop", f"{crop} is not divisible by model.output_stride {stride}"))
    if not isinstance(nodes, int) or nodes < 1:
        nodes = 1
    if (
        isinstance(batch, int)
        and isinstance(gpus, int)
        and batch > 0
        and gpus > 0
        and batch % (gpus * nodes)
    ):
        over = (
            f"resources.gpus {gpus}"
            if nodes == 1
            else f"{gpus * nodes} ranks (resources.gpus {gpus} x nodes {nodes})"
        )
        out.append(
            ("train.batch_size", f"the global batch {batch} does not split evenly over {over}")
        )
    return out


class Recipe(_Section):
    """One fully resolved experiment (a base recipe, or one variant of a grid)."""

    name: str
    variant: str = DEFAULT_VARIANT
    description: str | None = None
    image: str = "seglab/base:latest"
    model: ModelConfig = ModelConfig()
    data: DataConfig
    train: TrainConfig
    resources: ResourcesConfig = ResourcesConfig()
    export: list[Literal["torchscript", "onnx", "triton"]] = []

    @model_validator(mode="after")
    def _cross(self) -> Recipe:
        if not _NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} may hold only letters, digits, '_', '.', '-'")
        for key, message in _cross_field_problems(
            self.data.crop,
            self.model.output_stride,
            self.train.batch_size,
            self.resources.gpus,
            self.resources.nodes,
        ):
            raise ValueError(f"{key}: {message}")
        return self

    def to_yaml(self) -> str:
        """The resolved recipe as YAML (what a run directory's recipe.yaml holds)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def sha(self) -> str:
        """A short content hash of the resolved recipe (the `seglab.recipe_sha` label)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class Variant:
    """One cell of the ablation grid."""

    name: str
    overrides: dict[str, Any]
    recipe: Recipe

    @property
    def slug(self) -> str:
        """The name in a form fit for run ids and container names."""
        return self.name.replace("=", "-").replace(",", "_")


@dataclass
class RecipeFile:
    """A loaded recipe file: its base experiment and its variants."""

    path: Path
    base: Recipe
    axes: dict[str, list[str]] = field(default_factory=dict)
    variants: list[Variant] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The recipe's name."""
        return self.base.name

    def variant(self, name: str) -> Variant:
        """The variant called `name` (its `axis=level` name or its slug)."""
        for variant in self.variants:
            if name in (variant.name, variant.slug):
                return variant
        known = [v.name for v in self.variants]
        raise UnknownNameError("variant", name, known, where=f" in {self.path}")


# -- merging and locating ---------------------------------------------------------------

Origins = dict[KeyPath, tuple[str, int]]


def _origins(doc: Located) -> Origins:
    return {path: (doc.file, line) for path, line in doc.lines.items()}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _locate(origins: Origins, path: KeyPath, fallback: str) -> tuple[str, int]:
    probe = tuple(path)
    while probe:
        if probe in origins:
            return origins[probe]
        probe = probe[:-1]
    return origins.get((), (fallback, 1))


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any], Origins]:
    """The merged data of `path` and the files it extends, with each key's origin."""
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise ConfigError([Problem(str(path), 1, "extends", f"circular extends: {chain}")])
    doc = load_file(path)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), "a recipe must be a mapping of keys")])
    data = dict(doc.data)
    parent = data.pop("extends", None)
    if parent is None:
        return data, _origins(doc)
    if not isinstance(parent, str):
        raise ConfigError([doc.problem(("extends",), "expected a relative file path")])
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise ConfigError([doc.problem(("extends",), f"no such file: {parent_path}")])
    base_data, base_origins = _load_chain(parent_path, (*seen, resolved))
    if "ablate" in data:
        base_data.pop("ablate", None)  # a child's grid replaces its parent's, axes and all
    origins = {**base_origins, **_origins(doc)}
    return _merge(base_data, data), origins


# -- schema paths -----------------------------------------------------------------------


def _field_names(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


def _check_override_key(dotted_key: str) -> str | None:
    """None if `dotted_key` names a recipe field, else the reason it does not."""
    model: type[BaseModel] | None = Recipe
    parts = dotted_key.split(".")
    for i, part in enumerate(parts):
        if model is None:
            return f"{'.'.join(parts[:i])} has no sub-keys"
        if part not in model.model_fields or part in {"name", "variant"}:
            names = [n for n in _field_names(model) if n not in {"name", "variant"}]
            where = ".".join(parts[:i]) or "a recipe"
            return f"{where} has no key {part!r}{did_you_mean(part, names)}"
        model = submodel(model, part)
    return None


def _set_dotted(data: dict[str, Any], dotted_key: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    parts = dotted_key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    return out


# -- validation ---------------------------------------------------------------------------


def _get(data: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def _validate(
    data: dict[str, Any], origins: Origins, fallback: str, prefix: str = ""
) -> tuple[Recipe | None, list[Problem]]:
    try:
        return Recipe.model_validate(data), []
    except ValidationError as exc:
        problems = validation_problems(
            exc, Recipe, lambda path: _locate(origins, path, fallback), label=prefix
        )
    # Pydantic skips cross-field checks when a field is invalid; run them on the raw data so
    # that every problem is reported at once.
    cross = _cross_field_problems(
        _get(data, "data", "crop"),
        _get(data, "model", "output_stride", default=16),
        _get(data, "train", "batch_size"),
        _get(data, "resources", "gpus", default=1),
        _get(data, "resources", "nodes", default=1),
    )
    for key, message in cross:
        path = tuple(key.split("."))
        file, line = _locate(origins, path, fallback)
        problems.append(Problem(file, line, prefix + key, message))
    return None, problems


def _expand(
    data: dict[str, Any], origins: Origins, fallback: str
) -> tuple[dict[str, list[tuple[str, dict[str, Any]]]], list[Problem]]:
    """The ablate axes as {axis: [(level, overrides)]}, with their problems."""
    ablate = data.get("ablate")
    problems: list[Problem] = []
    axes: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    if ablate is None:
        return axes, problems

    def here(path: KeyPath, message: str) -> Problem:
        file, line = _locate(origins, path, fallback)
        return Problem(file, line, dotted(path), message)

    if not isinstance(ablate, dict) or not ablate:
        return axes, [here(("ablate",), "expected a mapping of axes to levels")]
    owner: dict[str, str] = {}
    for axis, levels in ablate.items():
        if not _LEVEL.match(axis):
            problems.append(here(("ablate", axis), "axis names may hold letters, digits, _ . -"))
        if not isinstance(levels, dict) or not levels:
            problems.append(
                here(("ablate", axis), "expected a mapping of level names to overrides")
            )
            continue
        axes[axis] = []
        touched: set[str] = set()
        for level, overrides in levels.items():
            path: KeyPath = ("ablate", axis, level)
            if not _LEVEL.match(str(level)):
                problems.append(here(path, "level names may hold letters, digits, _ . -"))
            if not isinstance(overrides, dict):
                problems.append(here(path, "expected a mapping of dotted keys to values"))
                continue
            for key in overrides:
                reason = _check_override_key(key)
                if reason is not None:
                    problems.append(
                        here((*path, key), f"overrides a key that does not exist: {reason}")
                    )
                touched.add(key)
            axes[axis].append((str(level), overrides))
        for key in sorted(touched):
            for other_key, other_axis in owner.items():
                overlap = (
                    key == other_key
                    or key.startswith(other_key + ".")
                    or other_key.startswith(key + ".")
                )
                if overlap and other_axis != axis:
                    first_level = next(lv for lv, ov in axes[axis] if key in ov)
                    problems.append(
                        here(
                            ("ablate", axis, first_level, key),
                            f"axes {other_axis!r} and {axis!r} both override "
                            f"{other_key if other_key == key else key}",
                        )
                    )
        for key in touched:
            owner.setdefault(key, axis)
    return axes, problems


def _grid(
    axes: dict[str, list[tuple[str, dict[str, Any]]]],
) -> Iterator[tuple[str, dict[str, Any], list[KeyPath]]]:
    names = list(axes)
    for combo in itertools.product(*(axes[a] for a in names)):
        label = ",".join(f"{axis}={level}" for axis, (level, _) in zip(names, combo, strict=True))
        merged: dict[str, Any] = {}
        paths: list[KeyPath] = []
        for axis, (level, overrides) in zip(names, combo, strict=True):
            merged.update(overrides)
            paths.extend(("ablate", axis, level, key) for key in overrides)
        yield label, merged, paths


def load(path: str | Path) -> RecipeFile:
    """Load, merge (`extends:`), validate and expand a recipe file.

    Raises :class:`ConfigError` listing every problem found, each as `FILE:LINE: key: msg`.
    """
    path = Path(path)
    data, origins = _load_chain(path)
    fallback = str(path)
    data.setdefault("name", path.stem)
    origins.setdefault((), (fallback, 1))
    base_data = {k: v for k, v in data.items() if k != "ablate"}
    base, problems = _validate(base_data, origins, fallback)
    axes, axis_problems = _expand(data, origins, fallback)
    problems += axis_problems
    variants: list[Variant] = []
    if base is not None and not problems:
        if not axes:
            variants.append(Variant(DEFAULT_VARIANT, {}, base))
        for label, overrides, paths in _grid(axes) if axes else ():
            variant_data = {**base_data, "variant": label}
            for key, value in overrides.items():
                variant_data = _set_dotted(variant_data, key, value)
            # Locate each problem at the overriding level when one touched that key.
            level_origins = dict(origins)
            for p in paths:
                level_origins[tuple(str(p[3]).split("."))] = _locate(origins, p, fallback)
            recipe, variant_problems = _validate(
                variant_data, level_origins, fallback, prefix=f"[{label}] "
            )
            problems += variant_problems
            if recipe is not None:
                variants.append(Variant(label, overrides, recipe))
    if problems or base is None:
        raise ConfigError(problems)
    return RecipeFile(
        path=path,
        base=base,
        axes={a: [lv for lv, _ in ls] for a, ls in axes.items()},
        variants=variants,
    )


def load_resolved(path: str | Path) -> Recipe:
    """Load a resolved recipe (a run directory's recipe.yaml): no `extends`, no `ablate`."""
    path = Path(path)
    doc = load_file(path)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), "a recipe must be a mapping of keys")])
    for key in ("extends", "ablate"):
        if key in doc.data:
            raise ConfigError([doc.problem((key,), "not allowed in a resolved recipe")])
    data = dict(doc.data)
    data.setdefault("name", path.stem)
    recipe, problems = _validate(data, _origins(doc), str(path))
    if recipe is None:
        raise ConfigError(problems)
    return recipe
