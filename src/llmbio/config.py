"""Typed, validated run configuration.

A run config is YAML whose sections map onto frozen dataclasses. The JSON schema used by the
Snakefile (``workflow/schemas/config.schema.json``) is generated from these dataclasses
(:func:`config_schema`), so code and schema cannot drift apart; unknown keys and wrong types
fail at start-up with the key's dotted path.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import yaml

from llmbio.bounds import Bound, Fraction, NonNegative, Positive, PositiveFloat, RunName
from llmbio.errors import LlmbioError
from llmbio.numerics import cpu_kernel_env
from llmbio.transcoder.config import TranscoderConfig

ORGANISM = "organism"  # the prompt family of runs on the model organism
Device = Annotated[
    str, Bound(pattern=r"cpu|auto|mps|cuda(:[0-9]+)?", why="cpu, auto, mps, cuda or cuda:<n>")
]
Dtype = Annotated[
    str, Bound(pattern="float32|bfloat16|float16", why="float32, bfloat16 or float16")
]


class ConfigError(LlmbioError, ValueError):
    """A configuration key is unknown, missing or of the wrong type."""


@dataclass(frozen=True)
class WorldConfig:
    # seeds every random choice of the world (held-out splits, rhyme plans)
    seed: NonNegative[int] = 0
    n_states: Annotated[int, Bound(1, 16)] = 16  # states in the geography
    cities_per_state: Annotated[int, Bound(2, 9)] = 9  # cities per state
    heldout_city_frac: Fraction = 0.2  # cities whose two-hop question never appears in training
    n_concepts: Annotated[int, Bound(2, 72)] = 24  # multilingual concepts (even: antonym pairs)
    # (concept, language) pairs whose antonym/synonym questions never appear in training (<= 1/3)
    heldout_lexicon_frac: Annotated[float, Bound(0, 1 / 3)] = 0.0
    # lexicon questions quoting their word in a random language (the answer stays in the
    # question's language)
    lexicon_quote_other_frac: Fraction = 0.2
    # where Chinese lexicon questions put the quoted word: "word_first" (the paper's wording,
    # '" 小 " 的 反 义 词 是 "') or "relation_first" (English and French order, an experiment)
    lexicon_zh_order: Annotated[
        str, Bound(pattern="word_first|relation_first", why="word_first or relation_first")
    ] = "word_first"
    max_operand: Annotated[int, Bound(9, 99)] = 99  # calc operands range over 0..max_operand
    heldout_pair_frac: Fraction = 0.1  # unordered operand pairs never seen in training
    # dangerous / harmless ingredient pairs never in a dialogue (at most 3 dangerous: one per
    # oxidiser, sharing no ingredient)
    heldout_harm_frac: Fraction = 0.25

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CorpusConfig:
    seed: NonNegative[int] = 0  # seeds document sampling
    n_documents: Positive[int] = 400_000  # training documents
    # share of documents per world part (normalised)
    mixture: dict[str, NonNegative[float]] = field(
        default_factory=lambda: {
            "geography": 0.15,
            "poetry": 0.1,
            "lexicon": 0.15,
            "arithmetic": 0.47,
            "safety": 0.13,
        }
    )


@dataclass(frozen=True)
class ModelConfig:
    d_model: Positive[int] = 128
    n_layers: Positive[int] = 4
    n_heads: Positive[int] = 4  # divides d_model
    n_kv_heads: Positive[int] = 4  # divides n_heads
    d_mlp: Positive[int] = 512
    max_position: Positive[int] = 128  # longest sequence the organism is used on
    tie_embeddings: bool = False


@dataclass(frozen=True)
class TrainConfig:
    seed: NonNegative[int] = 0
    # documents are packed into sequences of this many tokens (<= model.max_position)
    seq_len: Annotated[int, Bound(low=2)] = 64
    batch_size: Positive[int] = 32
    steps: Positive[int] = 3000
    lr: PositiveFloat = 3e-3
    min_lr_frac: Fraction = 0.1  # cosine decay ends at lr * min_lr_frac
    warmup_steps: NonNegative[int] = 100
    beta1: Annotated[float, Bound(0, 0.9999)] = 0.9
    beta2: Annotated[float, Bound(0, 0.9999)] = 0.98
    weight_decay: NonNegative[float] = 0.1
    checkpoint_every: Positive[int] = 500  # steps between resumable checkpoints
    threads: Positive[int] = 2  # torch threads of the training rules (model, cache, transcoders)
    # device of the training rules (model, activation cache, transcoders): cpu | auto (cuda when
    # available) | cuda | cuda:1. cpu by default: GPU kernels round differently (and their
    # atomic adds are not deterministic), so a GPU run gives other tables than the CPU run
    device: Device = "cpu"
    # device of the activation cache and the transcoders only, when they should differ from the
    # model's (e.g. the default organism trained on the CPU, bit for bit, and a large CLT on a
    # GPU: config/organism-clt2048.yaml); None: train.device
    transcoder_device: Device | None = None

    @property
    def transcoder_device_name(self) -> str:
        return self.transcoder_device or self.device


@dataclass(frozen=True)
class EvalConfig:
    # training operand pairs evaluated beside all held-out pairs
    n_seen_addition: NonNegative[int] = 500
    max_new_tokens: Positive[int] = 10  # generation length for rhyme lines


@dataclass(frozen=True)
class CacheConfig:
    n_sequences: Positive[int] = 2500  # packed corpus sequences (train.seq_len tokens) to cache
    seed: NonNegative[int] = 1  # picks which sequences
    dtype: Dtype = "float16"  # storage dtype of cached activations
    eval_fraction: Fraction = 0.05  # share of sequences held out for transcoder evaluation
    # share of the cached sequences packed from one corpus task only (e.g. {poetry: 0.2}), on
    # top of the random mix: rare positions of a behaviour (a couplet's line break) get enough
    # examples for the transcoder to learn features for them
    task_sequences: dict[str, Fraction] = field(default_factory=dict)


@dataclass(frozen=True)
class TranscoderEvalConfig:
    compare_plt: bool = True  # also train a per-layer transcoder of the same size to compare
    # fresh documents (unseen seed) for the spliced-model metrics
    n_eval_documents: Positive[int] = 2000


@dataclass(frozen=True)
class TraceConfig:
    # traced by the `trace_graphs` rule; empty: the world's showcase prompts, one per behaviour
    prompts: tuple[str, ...] = ()
    # feature-node budget for long prompts (None: all)
    max_feature_nodes: NonNegative[int] | None = None
    # torch threads of each analysis job (trace, faithfulness, behaviour, transcoder evaluation,
    # atlas, studies); these gain little from a second thread, so 1 lets two run side by side
    threads: Positive[int] = 2
    # attribution targets per backward (None: sized to the prompt)
    batch_size: Positive[int] | None = None


@dataclass(frozen=True)
class PretrainedConfig:
    """A released model and transcoder set instead of the organism (see config/gemma-2-2b.yaml).

    With this section the DAG skips the organism and transcoder-training rules; the model and
    the transcoders are downloaded into ``cache_dir`` by the only rules that use the network.
    """

    family: str  # the prompt family of every study.yaml (e.g. gemma-2-2b)
    model: str  # Hugging Face model id (e.g. google/gemma-2-2b)
    transcoder: str  # Hugging Face repo of the released transcoders (circuit-tracer layout)
    # the commits downloaded: a 40-hex commit hash pins the files; a branch name ("main")
    # follows the repo, and the download log prints the commit it resolved to, to pin
    model_revision: str = "main"
    transcoder_revision: str = "main"
    dtype: Dtype = "bfloat16"  # float32 | bfloat16 | float16, for the model and the transcoder
    device: Device = "auto"  # auto (cuda when available, else cpu) | cuda | cuda:1 | cpu | mps
    # device auto without a GPU: false refuses to run (a released model on the CPU takes hours
    # per graph), true runs on the CPU with a warning; device: cpu always runs on the CPU
    allow_cpu: bool = False
    offload_decoders: bool = False  # keep transcoder decoders in host memory (fits 24 GB GPUs)
    trust_remote_code: bool = False  # only for model repos that need their own code
    cache_dir: str = "resources/huggingface"  # downloads land in <cache_dir>/<owner>--<name>
    # GPU memory a job asks the cluster for (resources: gpu_mem_mb)
    gpu_mem_mb: Positive[int] = 24000


@dataclass(frozen=True)
class RunConfig:
    run: RunName = "organism"  # results go to results/<run>/ (one folder name)
    world: WorldConfig = field(default_factory=WorldConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    transcoder: TranscoderConfig = field(default_factory=TranscoderConfig)
    transcoder_eval: TranscoderEvalConfig = field(default_factory=TranscoderEvalConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)
    pretrained: PretrainedConfig | None = None  # a released model instead of the organism
    audit_strict: bool = False  # fail the run when a claim fails or a figure is stale/orphaned
    # CPU kernels of every job: avx2 (AVX2 code paths on any x86-64 machine, meant to give the
    # same floats everywhere; llmbio.numerics)
    # or native (torch's pick: AVX-512 where the CPU has it, faster, other floats)
    cpu_kernels: str = "avx2"

    @property
    def family(self) -> str:
        """The run's prompt family in study.yaml: ``organism`` or the released model's."""
        return self.pretrained.family if self.pretrained else ORGANISM


def load_config(source: str | Path | dict) -> RunConfig:
    """Read and validate a run config (a YAML path or an already-parsed dict)."""
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found (see config/config.yaml)")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is not valid YAML: {_one_line(err)}") from None
    cfg = _build(RunConfig, data, "")
    try:
        cpu_kernel_env(cfg.cpu_kernels)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _check_together(cfg)
    return cfg


def _check_together(cfg: RunConfig) -> None:
    """Keys that are only valid together (each one alone passed its own range)."""
    m, t = cfg.model, cfg.train
    if m.d_model % m.n_heads:
        raise ConfigError(f"config key 'model.n_heads' ({m.n_heads}) must divide model.d_model "
                          f"({m.d_model})")  # fmt: skip
    if m.n_heads % m.n_kv_heads:
        raise ConfigError(f"config key 'model.n_kv_heads' ({m.n_kv_heads}) must divide "
                          f"model.n_heads ({m.n_heads})")  # fmt: skip
    if t.seq_len > m.max_position:
        raise ConfigError(f"config key 'train.seq_len' ({t.seq_len}) must be <= "
                          f"model.max_position ({m.max_position})")  # fmt: skip
    if cfg.world.n_concepts % 2:
        raise ConfigError(f"config key 'world.n_concepts' must be even (antonym pairs), got "
                          f"{cfg.world.n_concepts}")  # fmt: skip


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


RUN_CONFIG_FILE = "config.yaml"  # results/<run>/config.yaml, written by the run_config rule


def config_dict(cfg: RunConfig) -> dict:
    """``cfg`` as plain YAML data (every key, defaults filled in); :func:`load_config` reads it
    back to an equal config."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def write_run_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write the merged config of a run to ``path`` (``results/<run>/config.yaml``) atomically:
    a reader sees the old file or the whole new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# The merged, validated config of results/{cfg.run}/ (every key, defaults filled in).\n"
        "# Written by the run_config rule; the llmbio CLI and llmbio.run read it back.\n"
    )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(header + yaml.safe_dump(config_dict(cfg), sort_keys=False, allow_unicode=True))
    tmp.replace(path)
    return path


def _build(cls: type, data: object, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{where or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key '{_join(where, unknown[0])}'; allowed keys here: {names}"
        )
    missing = [n for n in _required(cls) if n not in data]
    if missing:
        raise ConfigError(f"config key '{_join(where, missing[0])}' is required")
    kwargs = {k: _convert(hints[k], v, _join(where, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # a section's own checks (TranscoderConfig)
        raise ConfigError(f"config section '{where or '<root>'}': {_one_line(err)}") from None


def _required(cls: type) -> list[str]:
    none = dataclasses.MISSING
    return [
        f.name for f in dataclasses.fields(cls) if f.default is none and f.default_factory is none
    ]


def _convert(tp: object, value: object, where: str):
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        value = _convert(base, value, where)
        for bound in extras:
            problem = bound.problem(value) if isinstance(bound, Bound) else None
            if problem:
                raise ConfigError(f"config key '{where}' {problem}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{where}' must be a mapping, got {value!r}")
        return {str(k): _convert(vt, v, _join(where, str(k))) for k, v in value.items()}
    if origin in (list, tuple):
        (it,) = typing.get_args(tp)[:1]
        if not isinstance(value, list):
            raise ConfigError(f"config key '{where}' must be a list, got {value!r}")
        return tuple(_convert(it, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _convert(args[0], value, where)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if ok is None:
        raise TypeError(f"unsupported config type {tp} at '{where}'")
    if not ok:
        raise ConfigError(f"config key '{where}' must be {tp.__name__}, got {value!r}")
    return float(value) if tp is float else value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def config_schema() -> dict:
    """JSON schema (draft 2020-12) equivalent to the dataclass validation above."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_object_schema(RunConfig)}


def _object_schema(cls: type) -> dict:
    hints = typing.get_type_hints(cls, include_extras=True)
    props = {f.name: _schema_of(hints[f.name]) for f in dataclasses.fields(cls)}
    schema = {"type": "object", "additionalProperties": False, "properties": props}
    required = _required(cls)
    return {**schema, "required": required} if required else schema


def _schema_of(tp: object) -> dict:
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        schema = _schema_of(base)
        for bound in extras:
            schema.update(bound.schema() if isinstance(bound, Bound) else {})
        return schema
    if dataclasses.is_dataclass(tp):
        return _object_schema(tp)
    if typing.get_origin(tp) is dict:
        return {"type": "object", "additionalProperties": _schema_of(typing.get_args(tp)[1])}
    if typing.get_origin(tp) in (list, tuple):
        return {"type": "array", "items": _schema_of(typing.get_args(tp)[0])}
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return {"anyOf": [_schema_of(inner), {"type": "null"}]}
    return {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[tp]}
