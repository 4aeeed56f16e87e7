"""Recipes: loading with `FILE:LINE` errors, `extends:`, ablation grids, memory estimates.

A recipe file holds one base experiment plus an optional ``ablate:`` block of named axes,
each with named levels that are dotted overrides. The grid is the cartesian product of the
axes (in file order); each cell is a :class:`Variant` named ``axis=level,axis=level``.
The schema itself (every key, default and bound) is :mod:`seglab.recipeschema`; its names
are re-exported here.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from seglab.errors import UnknownNameError, did_you_mean
from seglab.recipeschema import (
    DEFAULT_VARIANT,
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_ITERATIONS,
    MAX_SAMPLES,
    MAX_SIDE,
    MAX_WORKERS,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    Recipe,
    ResourcesConfig,
    ScheduleConfig,
    SyntheticConfig,
    TrainConfig,
    cross_field_problems,
)
from seglab.yamlpos import (
    ConfigError,
    KeyPath,
    Located,
    Problem,
    dotted,
    load_file,
    load_text,
    submodel,
    validation_problems,
)

_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

__all__ = [
    "DEFAULT_VARIANT",
    "MAX_BATCH",
    "MAX_EPOCHS",
    "MAX_ITERATIONS",
    "MAX_SAMPLES",
    "MAX_SIDE",
    "MAX_WORKERS",
    "DataConfig",
    "ModelConfig",
    "OptimizerConfig",
    "Recipe",
    "RecipeFile",
    "ResourcesConfig",
    "ScheduleConfig",
    "SyntheticConfig",
    "TrainConfig",
    "Variant",
    "estimate_activation_bytes",
    "load",
    "load_resolved",
    "num_classes",
    "parse_resolved",
]


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
    cross = cross_field_problems(
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
            # Locate each problem at the overriding level when one touched that key (or
            # anything inside it: the base file's lines for the old value no longer apply).
            overridden: Origins = {
                tuple(str(p[3]).split(".")): _locate(origins, p, fallback) for p in paths
            }
            level_origins = {
                path: origin
                for path, origin in origins.items()
                if not any(path[: len(key)] == key for key in overridden)
            }
            level_origins.update(overridden)
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
    return _resolved(load_file(path), path.stem)


def parse_resolved(text: str, source: str) -> Recipe:
    """A resolved recipe from YAML text (one stored in the registry, say), read within the
    YAML bounds of :mod:`seglab.yamlpos`; `source` names it in errors."""
    return _resolved(load_text(text, source), "recipe")


def _resolved(doc: Located, default_name: str) -> Recipe:
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), "a recipe must be a mapping of keys")])
    for key in ("extends", "ablate"):
        if key in doc.data:
            raise ConfigError([doc.problem((key,), "not allowed in a resolved recipe")])
    data = dict(doc.data)
    data.setdefault("name", default_name)
    recipe, problems = _validate(data, _origins(doc), doc.file)
    if recipe is None:
        raise ConfigError(problems)
    return recipe


# -- memory ------------------------------------------------------------------------------

# Activation elements per input pixel of one sample that autograd keeps for the backward
# pass of seglab's networks, by (arch, backbone, output_stride); measured on the models of
# seglab.train.models (tests/unit/test_recipe_memory.py re-measures them) and rounded up.
_ELEMENTS_PER_PIXEL: dict[tuple[str, str, int], int] = {
    ("deeplabv3", "resnet18", 8): 300,
    ("deeplabv3", "resnet18", 16): 155,
    ("deeplabv3", "resnet34", 8): 435,
    ("deeplabv3", "resnet34", 16): 215,
    ("deeplabv3", "resnet50", 8): 1080,
    ("deeplabv3", "resnet50", 16): 535,
    ("deeplabv3", "resnet101", 8): 1940,
    ("deeplabv3", "resnet101", 16): 750,
    ("deeplabv3plus", "resnet18", 8): 380,
    ("deeplabv3plus", "resnet18", 16): 245,
    ("deeplabv3plus", "resnet34", 8): 515,
    ("deeplabv3plus", "resnet34", 16): 305,
    ("deeplabv3plus", "resnet50", 8): 1160,
    ("deeplabv3plus", "resnet50", 16): 625,
    ("deeplabv3plus", "resnet101", 8): 2020,
    ("deeplabv3plus", "resnet101", 16): 840,
}
_AUX_ELEMENTS_PER_PIXEL = 16  # the FCN head on layer3
_LOSS_BYTES_PER_CLASS = 4  # cross-entropy keeps fp32 log-probabilities, AMP or not
_CLASSES = {"cityscapes": 19, "ade20k": 150, "voc": 21}


def num_classes(data: DataConfig) -> int:
    """How many classes the recipe's model predicts (as `seglab.train.labels` counts them)."""
    if data.dataset == "synthetic":
        return (data.synthetic or SyntheticConfig()).num_classes
    return _CLASSES[data.dataset]


def estimate_activation_bytes(recipe: Recipe) -> int:
    """Bytes of activations one training rank of `recipe` keeps for its backward pass.

    ``batch_per_rank x crop_h x crop_w x (E x bytes_per_element + heads x classes x 4)``
    where ``batch_per_rank`` is the global batch over ``gpus x nodes`` ranks (rounded up),
    ``E`` the measured activation elements per pixel of the architecture, backbone and
    output stride (plus 16 with the aux head), ``bytes_per_element`` 2 with
    ``train.amp`` fp16/bf16 and 4 without, and the last term the loss's fp32
    log-probabilities (``heads`` is 2 with the aux head). It is a floor of a training
    step's peak: weights, gradients, optimizer state and backward's transient buffers
    come on top, so a recipe whose estimate alone exceeds a device's memory cannot run.
    """
    model = recipe.model
    batch = math.ceil(recipe.train.batch_size / recipe.resources.world_size)
    height, width = recipe.data.crop
    elements = _ELEMENTS_PER_PIXEL[(model.arch, model.backbone, model.output_stride)]
    heads = 1
    if model.aux_loss:
        elements += _AUX_ELEMENTS_PER_PIXEL
        heads = 2
    element_bytes = 4 if recipe.train.amp == "none" else 2
    per_pixel = elements * element_bytes + heads * num_classes(recipe.data) * _LOSS_BYTES_PER_CLASS
    return batch * height * width * per_pixel
