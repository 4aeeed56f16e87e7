"""The recipe schema: every key, its type, default and bounds, as pydantic models.

:class:`Recipe` is one fully resolved experiment. Upper bounds (crop side, batch, epochs,
iterations, workers) sit far above any real experiment and far below what would exhaust a
machine, so an absurd value fails ``seglab recipe check`` at its line instead of at the
first batch. :mod:`seglab.recipes` loads files into these models.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_VARIANT = "default"
_SHM = re.compile(r"^[1-9][0-9]*[kmgKMG]?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Upper bounds: far above any real experiment, far below what would exhaust a machine.
MAX_SIDE = 8192
"""The largest crop (or synthetic image) side, in pixels."""
MAX_BATCH = 4096
"""The largest global batch (train and validation)."""
MAX_EPOCHS = 100_000
MAX_ITERATIONS = 100_000_000
"""The most iterations; also bounds the warm-up and every interval counted in iterations."""
MAX_WORKERS = 64
"""The most DataLoader worker processes per rank."""
MAX_SAMPLES = 10_000_000
"""The most images the synthetic dataset generates per split."""

Side = Annotated[int, Field(gt=0, le=MAX_SIDE)]


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

    train_size: int = Field(default=256, gt=0, le=MAX_SAMPLES)
    val_size: int = Field(default=32, gt=0, le=MAX_SAMPLES)
    image_size: list[Side] = Field(default=[64, 64], min_length=2, max_length=2)
    num_classes: int = Field(default=4, ge=2, le=255)


class DataConfig(_Section):
    """The dataset and its train-time transforms."""

    dataset: Literal["cityscapes", "ade20k", "voc", "synthetic"]
    root: str | None = Field(
        default=None,
        description="dataset root as a name resolved per host (hosts.yaml `datasets:`); "
        "defaults to the dataset name",
    )
    crop: list[Side] = Field(min_length=2, max_length=2, description="[height, width]")
    scale_range: list[float] = Field(default=[0.5, 2.0], min_length=2, max_length=2)
    hflip: bool = True
    workers: int = Field(default=4, ge=0, le=MAX_WORKERS)
    synthetic: SyntheticConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
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
    warmup_iters: int = Field(default=0, ge=0, le=MAX_ITERATIONS)
    warmup_ratio: float = Field(default=0.1, gt=0, le=1)


class TrainConfig(_Section):
    """The optimisation loop. `batch_size` is the global batch, split across ranks."""

    epochs: int | None = Field(default=None, gt=0, le=MAX_EPOCHS)
    iterations: int | None = Field(default=None, gt=0, le=MAX_ITERATIONS)
    batch_size: int = Field(gt=0, le=MAX_BATCH)
    val_batch_size: int = Field(default=1, gt=0, le=MAX_BATCH)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    amp: Literal["none", "fp16", "bf16"] = "none"
    channels_last: bool = False
    cudnn_benchmark: bool = True
    compile: bool = False
    aux_weight: float = Field(default=0.4, ge=0)
    eval_interval: int = Field(default=1, gt=0, le=MAX_ITERATIONS)
    eval_unit: Literal["epoch", "iter"] = "epoch"
    checkpoint_interval: int = Field(default=500, gt=0, le=MAX_ITERATIONS, description="iterations")
    log_interval: int = Field(default=10, gt=0, le=MAX_ITERATIONS, description="iterations")
    grad_clip: float | None = Field(default=None, gt=0)
    samples: int = Field(
        default=8, ge=0, le=64, description="validation images drawn at each evaluation (0: none)"
    )
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
    cpus: float | None = Field(default=None, gt=0, le=1024)
    pids: int = Field(
        default=4096,
        ge=64,
        le=4_194_304,
        description="most processes and threads the run may hold at once (its container's "
        "pids limit; DataLoader workers and their threads count)",
    )

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


def cross_field_problems(
    crop: Any, stride: Any, batch: Any, gpus: Any, nodes: Any = 1
) -> list[tuple[str, str]]:
    """Checks across sections, as (key, message); values of the wrong type are skipped.

    Run on raw data too (pydantic skips model validators once a field fails), so that
    every problem of a file is reported at once.
    """
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
        for key, message in cross_field_problems(
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
