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

import yaml

from llmbio.numerics import cpu_kernel_env
from llmbio.transcoder.config import TranscoderConfig

ORGANISM = "organism"  # the prompt family of runs on the model organism


class ConfigError(ValueError):
    """A configuration key is unknown, missing or of the wrong type."""


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0  # seeds every random choice of the world (held-out splits, rhyme plans)
    n_states: int = 16  # states in the geography (<= 16)
    cities_per_state: int = 9  # cities per state (<= 9)
    heldout_city_frac: float = 0.2  # cities whose two-hop question never appears in training
    n_concepts: int = 24  # multilingual concepts (even, antonym pairs, <= 72)
    # (concept, language) pairs whose antonym/synonym questions never appear in training (<= 1/3)
    heldout_lexicon_frac: float = 0.0
    # lexicon questions quoting their word in a random language (the answer stays in the
    # question's language)
    lexicon_quote_other_frac: float = 0.2
    # where Chinese lexicon questions put the quoted word: "word_first" (the paper's wording,
    # '" 小 " 的 反 义 词 是 "') or "relation_first" (English and French order, an experiment)
    lexicon_zh_order: str = "word_first"
    max_operand: int = 99  # calc operands range over 0..max_operand
    heldout_pair_frac: float = 0.1  # unordered operand pairs never seen in training
    # dangerous / harmless ingredient pairs never in a dialogue (at most 3 dangerous: one per
    # oxidiser, sharing no ingredient)
    heldout_harm_frac: float = 0.25

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CorpusConfig:
    seed: int = 0  # seeds document sampling
    n_documents: int = 400_000  # training documents
    # share of documents per world part (normalised)
    mixture: dict[str, float] = field(
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
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4
    d_mlp: int = 512
    max_position: int = 128  # longest sequence the organism is used on
    tie_embeddings: bool = False


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    seq_len: int = 64  # documents are packed into sequences of this many tokens
    batch_size: int = 32
    steps: int = 3000
    lr: float = 3e-3
    min_lr_frac: float = 0.1  # cosine decay ends at lr * min_lr_frac
    warmup_steps: int = 100
    beta1: float = 0.9
    beta2: float = 0.98
    weight_decay: float = 0.1
    checkpoint_every: int = 500  # steps between resumable checkpoints
    threads: int = 2  # torch threads of the training rules (model, cache, transcoders)
    # device of the training rules (model, activation cache, transcoders): cpu | auto (cuda when
    # available) | cuda | cuda:1. cpu by default: GPU kernels round differently (and their
    # atomic adds are not deterministic), so a GPU run gives other tables than the CPU run
    device: str = "cpu"
    # device of the activation cache and the transcoders only, when they should differ from the
    # model's (e.g. the default organism trained on the CPU, bit for bit, and a large CLT on a
    # GPU: config/organism-clt2048.yaml); None: train.device
    transcoder_device: str | None = None

    @property
    def transcoder_device_name(self) -> str:
        return self.transcoder_device or self.device


@dataclass(frozen=True)
class EvalConfig:
    n_seen_addition: int = 500  # training operand pairs evaluated beside all held-out pairs
    max_new_tokens: int = 10  # generation length for rhyme lines


@dataclass(frozen=True)
class CacheConfig:
    n_sequences: int = 2500  # packed corpus sequences (train.seq_len tokens) to cache
    seed: int = 1  # picks which sequences
    dtype: str = "float16"  # storage dtype of cached activations
    eval_fraction: float = 0.05  # share of sequences held out for transcoder evaluation
    # share of the cached sequences packed from one corpus task only (e.g. {poetry: 0.2}), on
    # top of the random mix: rare positions of a behaviour (a couplet's line break) get enough
    # examples for the transcoder to learn features for them
    task_sequences: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TranscoderEvalConfig:
    compare_plt: bool = True  # also train a per-layer transcoder of the same size to compare
    n_eval_documents: int = 2000  # fresh documents (unseen seed) for the spliced-model metrics


@dataclass(frozen=True)
class TraceConfig:
    # traced by the `trace_graphs` rule; empty: the world's showcase prompts, one per behaviour
    prompts: tuple[str, ...] = ()
    max_feature_nodes: int | None = None  # feature-node budget for long prompts (None: all)
    # torch threads of each analysis job (trace, faithfulness, behaviour, transcoder evaluation,
    # atlas, studies); these gain little from a second thread, so 1 lets two run side by side
    threads: int = 2
    batch_size: int | None = None  # attribution targets per backward (None: sized to the prompt)


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
    dtype: str = "bfloat16"  # float32 | bfloat16 | float16, for the model and the transcoder
    device: str = "auto"  # auto (cuda when available, else cpu) | cuda | cuda:1 | cpu | mps
    # device auto without a GPU: false refuses to run (a released model on the CPU takes hours
    # per graph), true runs on the CPU with a warning; device: cpu always runs on the CPU
    allow_cpu: bool = False
    offload_decoders: bool = False  # keep transcoder decoders in host memory (fits 24 GB GPUs)
    trust_remote_code: bool = False  # only for model repos that need their own code
    cache_dir: str = "resources/huggingface"  # downloads land in <cache_dir>/<owner>--<name>
    gpu_mem_mb: int = 24000  # GPU memory a job asks the cluster for (resources: gpu_mem_mb)


@dataclass(frozen=True)
class RunConfig:
    run: str = "organism"  # results go to results/<run>/
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
        if not path.exists():
            raise FileNotFoundError(f"Config file {path} not found (see config/config.yaml).")
        data = yaml.safe_load(path.read_text()) or {}
    cfg = _build(RunConfig, data, "")
    try:
        cpu_kernel_env(cfg.cpu_kernels)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg


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
    hints = typing.get_type_hints(cls)
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
    return cls(**kwargs)


def _required(cls: type) -> list[str]:
    none = dataclasses.MISSING
    return [
        f.name for f in dataclasses.fields(cls) if f.default is none and f.default_factory is none
    ]


def _convert(tp: object, value: object, where: str):
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
    hints = typing.get_type_hints(cls)
    props = {f.name: _schema_of(hints[f.name]) for f in dataclasses.fields(cls)}
    schema = {"type": "object", "additionalProperties": False, "properties": props}
    required = _required(cls)
    return {**schema, "required": required} if required else schema


def _schema_of(tp: object) -> dict:
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
