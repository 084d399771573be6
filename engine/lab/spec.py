"""What a run is (RunSpec) and the one path that checks it, shared by the CLI, the jobs and the Launch page.

`check()` needs nothing but the spec (hyperparameters, methods, options, device); `validate()` also loads the
dataset and checks it against the methods, the model name and the cluster: everything that can be known
before the model is loaded. Each problem is a ConfigError, DataError or ModelError naming what and where, so a
run never fails half-way for something that could have been seen at the start.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.data.contract import is_int
from engine.lab import checks
from engine.methods import registry
from engine.training.config import ConfigError, TrainConfig
from engine.training.evaluate import ALL_METRICS, primary_metric

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class RunSpec:
    data: str                     # JSONL path, EdgeWisePersona folder, or "sim" / "sim:personas=8,..." (simulator)
    model: str = "smollm2-135m"
    methods: list[str] = field(default_factory=lambda: ["base", "unified"])
    seed: int = 0
    name: str | None = None
    device: str | None = None     # None/"auto": CUDA when present
    precision: str = "auto"
    train: dict = field(default_factory=dict)    # TrainConfig fields
    options: dict = field(default_factory=dict)  # method options: cluster_k, merge_k, ...
    metric: str | None = None     # the primary metric (`score`); None: chosen from the data (engine.training.evaluate)
    study: dict | None = None     # {"study_id", "coords_json"} when the run is a point of a study (engine.lab.study)
    ray: str | None = None        # a Ray cluster's address ("auto", host:port): the heavy work goes there
    threads: int | None = None    # compute threads; None: the cores free when the run starts (re-checked per epoch)
    splits: str | None = None     # a split file (the study's edgesplits.json) deciding train/val/test; None: the
                                  # edgesplits.json beside the data when there is one (engine.data.splitfile)

    def check(self) -> TrainConfig:
        """What the spec alone can tell; raises ConfigError naming what is wrong; returns the training config."""
        if not isinstance(self.methods, (list, tuple)) or not self.methods:
            raise ConfigError("methods: give at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods: duplicated in {self.methods}")
        entries = [registry.method(m) for m in self.methods]
        if all(e.chooses for e in entries):
            raise ConfigError(f"methods: {self.methods[0]} picks, per persona, among the run's other methods; add at "
                              "least one")
        check_seed(self.seed)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.ray is not None and (not isinstance(self.ray, str) or not self.ray.strip()):
            raise ConfigError(f"ray must be a cluster address such as auto or 10.0.0.5:6379, got {self.ray!r}")
        if self.threads is not None and not (is_int(self.threads) and self.threads >= 1):
            raise ConfigError(f"threads must be an integer >= 1, got {self.threads!r}")
        if self.metric is not None and self.metric not in ALL_METRICS:
            raise ConfigError(f"metric must be one of {', '.join(ALL_METRICS)}, got {self.metric!r}")
        if not isinstance(self.train, dict) or not isinstance(self.options, dict):
            raise ConfigError("train and options must be mappings of names to values")
        checks.check_options(self.options)
        checks.check_device(self.device)
        cfg = TrainConfig.from_dict(self.train)
        checks.check_config(cfg, self.model)
        return cfg

    def validate(self) -> "Checked":
        """Everything that can be checked before the model is loaded: the spec, the model name, the Ray cluster,
        the dataset (DataError with FILE:LINE problems) and what the methods need from it."""
        from engine.data.dataset import load_dataset
        from engine.models.loading import check_model_name
        cfg = self.check()
        check_model_name(self.model)
        if self.ray:  # Ray installed and a cluster answering at the address, or a clear error now
            from engine.backends.ray import resolve_address
            resolve_address(self.ray)
        dataset = load_dataset(self.data, context_window=cfg.context_window, splits=self.splits)
        checks.check_data(self.methods, dataset)
        try:
            metric = primary_metric(dataset, self.metric)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return Checked(cfg, dataset, metric)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(**d)


@dataclass
class Checked:
    """A validated spec's training config, loaded dataset and primary metric."""
    cfg: TrainConfig
    dataset: object
    metric: str


MAX_SEED = 2**31 - 1  # the store keeps a run's seed as a 32-bit INTEGER


def check_seed(seed) -> None:
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if seed > MAX_SEED:
        raise ConfigError(f"seed must be at most {MAX_SEED} (the store keeps seeds as 32-bit integers), got {seed}")


def check_seed_list(seeds, what: str = "seeds") -> None:
    """ConfigError unless `seeds` is a non-empty list of distinct integers >= 0."""
    if not seeds or len(set(seeds)) != len(seeds) or not all(is_int(s) and s >= 0 for s in seeds):
        raise ConfigError(f"{what}: distinct integers >= 0, got {seeds!r}")


def parse_seeds(text: str) -> list[int]:
    """"0, 1,2" -> [0, 1, 2]: distinct integers >= 0, at least one; ConfigError naming the problem otherwise."""
    parts = [s.strip() for s in str(text).split(",") if s.strip()]
    try:
        seeds = [int(s) for s in parts]
    except ValueError:
        raise ConfigError(f"seeds: integers separated by commas, got {text!r}") from None
    if not seeds:
        raise ConfigError("seeds: give at least one seed")
    for s in seeds:
        check_seed(s)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: each at most once, got {text!r}")
    return seeds
