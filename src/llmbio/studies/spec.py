"""A case study as frozen dataclasses, read from ``studies/<name>/study.yaml``.

A study names its prompts (per model family), supernodes, interventions, figures and the
claims to check against measured tables. :func:`load_study` validates the file against
:func:`llmbio.studies.schema.study_schema` and then checks cross-references, so every mistake
is reported with the file and the field path, e.g.
``studies/multihop/study.yaml: claims[0].op: 'approx' is not one of [...]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from llmbio.errors import LlmbioError
from llmbio.studies.schema import DEFAULT_NEEDS, study_schema

STUDY_FILE = "study.yaml"


class StudyError(LlmbioError, ValueError):
    """A study file is invalid; the message names the file and the field path."""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    target: str | None = None  # the expected answer token, when there is one


ORGANISM = "organism"
ORGANISM_ONLY = (ORGANISM,)


@dataclass(frozen=True)
class Supernode:
    name: str
    features: tuple[str, ...] = ()  # "layer/feature" ids
    rule: dict | str | None = None  # label-table rule (see llmbio.features.supernodes)
    positions: tuple[int | str, ...] | None = None  # None: every position
    families: tuple[str, ...] | None = None  # prompt families it applies to (None: all)
    transcoder: str | None = None  # explicit ids are only valid for this transcoder repo

    def applies_to(self, family: str, transcoder: str | None = None) -> bool:
        if self.families is not None and family not in self.families:
            return False
        return self.transcoder is None or self.transcoder == transcoder


@dataclass(frozen=True)
class Edit:
    op: str  # scale | set | zero | inject
    supernode: str | None = None
    feature: str | None = None
    position: int | str = "all"  # token index, token text, or "all"
    value: float | None = None  # scale factor, set value, or inject multiplier
    donor_prompt: str | None = None


@dataclass(frozen=True)
class Intervention:
    id: str
    prompt: str
    edits: tuple[Edit, ...]
    freeze_attention: bool = False
    constrained_layers: tuple[int, int] | None = None
    families: tuple[str, ...] | None = None  # prompt families it runs on (None: all)


@dataclass(frozen=True)
class FigureSpec:
    id: str  # also the PNG's name: figures/<id>.png
    kind: str
    tables: tuple[str, ...]  # relative to the study's results folder
    caption: str
    families: tuple[str, ...] = ORGANISM_ONLY  # runs that draw it; elsewhere not applicable


@dataclass(frozen=True)
class Claim:
    id: str
    kind: str  # behaviour | existence | mechanism | control (see llmbio.studies.claims)
    statement: str
    table: str  # relative to the study's results folder
    column: str
    aggregate: str
    op: str
    threshold: float
    where: str | dict | None = None
    paper_value: float | str | None = None
    paper_ref: str = ""
    # runs whose tables can test it; on other runs the claim is "not_applicable" (not a pass)
    families: tuple[str, ...] = ORGANISM_ONLY
    # part of the study's central claim, which holds when all its central claims pass
    central: bool = False


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    path: Path  # the study's folder
    description: str = ""
    paper_section: str = ""
    needs: tuple[str, ...] = DEFAULT_NEEDS  # run outputs the analysis reads
    prompts: dict[str, tuple[Prompt, ...]] | None = None
    supernodes: tuple[Supernode, ...] = ()
    interventions: tuple[Intervention, ...] = ()
    figures: tuple[FigureSpec, ...] = ()
    claims: tuple[Claim, ...] = ()

    def prompt(self, prompt_id: str, family: str | None = None) -> Prompt:
        """The prompt ``prompt_id`` (of ``family``, or of the first family that has it)."""
        for fam, prompts in (self.prompts or {}).items():
            if family in (None, fam):
                for p in prompts:
                    if p.id == prompt_id:
                        return p
        raise KeyError(f"study {self.name!r} has no prompt {prompt_id!r}")

    def supernode(self, name: str) -> Supernode:
        for s in self.supernodes:
            if s.name == name:
                return s
        raise KeyError(f"study {self.name!r} has no supernode {name!r}")


def discover_studies(root: str | Path = "studies") -> list[str]:
    """Names of the folders under ``root`` holding a study.yaml, sorted.

    Folders starting with ``_`` or ``.`` (``studies/_template``) are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and d.name[0] not in "_." and (d / STUDY_FILE).is_file()
    )


def load_study(path: str | Path) -> Study:
    """Read and validate a study from its folder or its study.yaml."""
    path = Path(path)
    file = path / STUDY_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such study file")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise StudyError(f"{file}: not valid YAML{line}: {problem}; fix the file") from None
    _validate(data, file)
    study = _build(data, file.parent)
    problems = list(_cross_check(study, file.parent.name))
    if problems:
        raise StudyError("\n".join(f"{file}: {p}" for p in problems))
    return study


def _validate(data: object, file: Path) -> None:
    validator = jsonschema.Draft202012Validator(study_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise StudyError("\n".join(f"{file}: {_describe(e)}" for e in errors))


def _describe(error: jsonschema.ValidationError) -> str:
    if error.context:  # anyOf: report the branch that came closest
        error = jsonschema.exceptions.best_match(error.context)
    where = format_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"{format_path([*error.absolute_path, extra[0]])}: unknown key; allowed: {allowed}"
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        return f"{format_path([*error.absolute_path, missing[0]])}: required key missing"
    return f"{where}: {error.message}"


def format_path(parts: Iterable[str | int]) -> str:
    """``["claims", 0, "op"]`` -> ``"claims[0].op"``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _build(data: dict, folder: Path) -> Study:
    prompts = {
        fam: tuple(Prompt(p["id"], p["text"], p.get("target")) for p in items)
        for fam, items in data.get("prompts", {}).items()
    }
    supernodes = tuple(
        Supernode(
            s["name"],
            tuple(s.get("features", ())),
            s.get("rule"),
            tuple(s["positions"]) if "positions" in s else None,
            _families(s, None),
            s.get("transcoder"),
        )
        for s in data.get("supernodes", [])
    )
    interventions = tuple(
        Intervention(
            i["id"],
            i["prompt"],
            tuple(Edit(**e) for e in i["edits"]),
            i.get("freeze_attention", False),
            tuple(i["constrained_layers"]) if i.get("constrained_layers") else None,
            _families(i, None),
        )
        for i in data.get("interventions", [])
    )
    figures = tuple(
        FigureSpec(
            f["id"], f["kind"], _as_tuple(f["table"]), f["caption"], _families(f, ORGANISM_ONLY)
        )
        for f in data.get("figures", [])
    )
    claims = tuple(
        Claim(**{**c, "threshold": float(c["threshold"]), "families": _families(c, ORGANISM_ONLY)})
        for c in data.get("claims", [])
    )
    return Study(
        name=data["name"],
        title=data["title"],
        path=folder,
        description=data.get("description", ""),
        paper_section=data.get("paper_section", ""),
        needs=tuple(data.get("needs", DEFAULT_NEEDS)),
        prompts=prompts,
        supernodes=supernodes,
        interventions=interventions,
        figures=figures,
        claims=claims,
    )


def _families(item: dict, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return tuple(item["families"]) if "families" in item else default


def _as_tuple(value: str | list[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _cross_check(study: Study, folder_name: str) -> Iterable[str]:
    """Problems the schema cannot see: names, unique ids and references between sections."""
    if study.name != folder_name:
        yield f"name: {study.name!r} must equal the study's folder name {folder_name!r}"
    for section, ids in (
        ("supernodes", [s.name for s in study.supernodes]),
        ("interventions", [i.id for i in study.interventions]),
        ("figures", [f.id for f in study.figures]),
        ("claims", [c.id for c in study.claims]),
        *((f"prompts.{fam}", [p.id for p in ps]) for fam, ps in (study.prompts or {}).items()),
    ):
        for i, x in enumerate(ids):
            if x in ids[:i]:
                yield f"{section}[{i}]: duplicate id {x!r}"
    prompt_ids = {p.id for ps in (study.prompts or {}).values() for p in ps}
    supernodes = {s.name for s in study.supernodes}
    for i, iv in enumerate(study.interventions):
        if iv.prompt not in prompt_ids:
            yield f"interventions[{i}].prompt: unknown prompt {iv.prompt!r}"
        for j, e in enumerate(iv.edits):
            where = f"interventions[{i}].edits[{j}]"
            if (e.supernode is None) == (e.feature is None):
                yield f"{where}: give exactly one of 'supernode' or 'feature'"
            if e.supernode is not None and e.supernode not in supernodes:
                yield f"{where}.supernode: unknown supernode {e.supernode!r}"
            if e.donor_prompt is not None and e.donor_prompt not in prompt_ids:
                yield f"{where}.donor_prompt: unknown prompt {e.donor_prompt!r}"
