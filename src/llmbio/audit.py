"""The audit: every claim checked against measured numbers, every figure against its tables.

:func:`run_audit` re-evaluates the claims of every study from the tables on disk (so a
hand-edited table cannot hide behind an older ``claims.parquet``) and checks the provenance of
every PNG under ``results/<run>/`` (see :func:`llmbio.figures.check_figure`); a figure a
study.yaml declares but no analysis drew is ``missing``. It writes ``audit.parquet`` (one row
per claim or figure) and ``audit.md`` (a readable report, headed by the passes per kind of
claim, :func:`claims_by_kind`, and by which studies' central claims hold,
:func:`central_claims`). Failures never raise unless
``strict``: then :class:`AuditFailed` is raised after both files are written.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from llmbio.figures import FigureCheck, check_figure
from llmbio.studies import discover_studies, evaluate_claims, load_study
from llmbio.studies.claims import INTERVAL, NOT_APPLICABLE, run_family
from llmbio.studies.intervals import NONE
from llmbio.studies.schema import CLAIM_KINDS
from llmbio.studies.spec import Study

AUDIT_COLUMNS = [
    "kind", "study", "item", "claim_kind", "central", "statement", "table", "measured", "n",
    "ci_low", "ci_high", "interval", "op", "threshold", "rule", "paper_value", "paper_ref",
    "status", "passed", "detail",
]  # fmt: skip
RUN_LEVEL = ""  # the `study` of figures outside results/<run>/studies/


class AuditFailed(RuntimeError):
    """Strict audit: a claim did not pass or a figure is not backed by its tables."""


def run_audit(
    results_dir: str | Path,
    studies_root: str | Path = "studies",
    strict: bool = False,
    out_table: str | Path | None = None,
    out_markdown: str | Path | None = None,
) -> tuple[pd.DataFrame, str]:
    """Audit ``results/<run>``; writes ``audit.parquet`` and ``audit.md`` there by default."""
    results_dir = Path(results_dir)
    studies = [load_study(Path(studies_root) / name) for name in discover_studies(studies_root)]
    frames = [claim_rows(s, results_dir) for s in studies]
    audit = pd.concat([*frames, figure_rows(results_dir, studies)], ignore_index=True)
    audit = audit.reindex(columns=AUDIT_COLUMNS).astype(
        {"central": bool, "measured": float, "threshold": float, "passed": bool, "n": "Int64"}
        | {"ci_low": float, "ci_high": float}
    )
    markdown = render_markdown(audit, studies, results_dir)
    out_table = Path(out_table or results_dir / "audit.parquet")
    out_markdown = Path(out_markdown or results_dir / "audit.md")
    out_table.parent.mkdir(parents=True, exist_ok=True)
    audit.to_parquet(out_table, index=False)
    out_markdown.write_text(markdown)
    print(summary_line(audit))
    print(kinds_line(claims_by_kind(audit)))
    central = central_claims(audit)
    if len(central):
        print(central_line(central))
    failed = audit[~audit["passed"] & (audit["status"] != NOT_APPLICABLE)]
    for r in failed.itertuples():
        print(f"FAILED {r.kind} {r.study or 'run'}/{r.item}: {r.status} {r.detail}")
    if strict and len(failed):  # not_applicable items are not failures
        raise AuditFailed(f"{summary_line(audit)}; see {out_markdown}")
    return audit, markdown


def claim_rows(study: Study, results_dir: Path) -> pd.DataFrame:
    claims = evaluate_claims(study, results_dir / "studies" / study.name)
    return claims.rename(columns={"claim_id": "item"}).assign(kind="claim")


def figure_rows(results_dir: Path, studies: list[Study]) -> pd.DataFrame:
    """Every PNG under ``results_dir`` plus every declared figure that was never drawn."""
    rows = []
    for png in sorted(results_dir.rglob("*.png")):
        rel = png.relative_to(results_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue  # checkpoints and other hidden scratch space are no results
        check = check_figure(png)
        tables = [_relative(t, results_dir) for t in check.tables]
        rows.append(_figure_row(_owner(rel), rel.as_posix(), check.caption, tables, check))
    drawn = {r["item"] for r in rows}
    never_drawn = FigureCheck("missing", "declared in study.yaml but never drawn", (), "")
    for study in studies:
        family = run_family(results_dir / "studies" / study.name)
        for fig in study.figures:
            rel = f"studies/{study.name}/figures/{fig.id}.png"
            if rel in drawn:
                continue
            check = never_drawn
            if family not in fig.families:
                detail = f"drawn on {', '.join(fig.families)} runs only, not on {family}"
                check = FigureCheck(NOT_APPLICABLE, detail, (), "")
            rows.append(_figure_row(study.name, rel, fig.caption, fig.tables, check))
    return pd.DataFrame(rows, columns=AUDIT_COLUMNS)


def _figure_row(study: str, item: str, caption: str, tables, check: FigureCheck) -> dict:
    return {
        "kind": "figure",
        "study": study,
        "item": item,
        "central": False,
        "statement": caption,
        "table": ", ".join(tables),
        "status": check.status,
        "passed": check.status == "ok",
        "detail": check.detail,
    }


def _owner(rel: Path) -> str:
    parts = rel.parts
    return parts[1] if len(parts) > 2 and parts[0] == "studies" else RUN_LEVEL


def _relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def summary_line(audit: pd.DataFrame) -> str:
    """Verdict and counts; ``not_applicable`` items (another family's) neither pass nor fail."""
    claims, figures = audit[audit["kind"] == "claim"], audit[audit["kind"] == "figure"]
    applicable = audit[audit["status"] != NOT_APPLICABLE]
    verdict = "PASS" if applicable["passed"].all() else "FAIL"
    return (
        f"audit {verdict}: claims {claims['passed'].sum()}/{len(claims)} pass "
        f"({_counts(claims)}); figures {figures['passed'].sum()}/{len(figures)} ok "
        f"({_counts(figures)})"
    )


def claims_by_kind(audit: pd.DataFrame) -> pd.DataFrame:
    """Per claim kind, in :data:`CLAIM_KINDS` order: ``applicable`` claims, how many ``passed``
    and how many of them were judged on their ``interval`` (the others on the point)."""
    claims = audit[(audit["kind"] == "claim") & (audit["status"] != NOT_APPLICABLE)]
    kinds = claims["claim_kind"]
    table = pd.DataFrame(
        {
            "applicable": kinds.value_counts(),
            "passed": claims["passed"].astype(bool).groupby(kinds).sum(),
            "interval": (claims["rule"] == INTERVAL).groupby(kinds).sum(),
        }
    )
    order = [k for k in CLAIM_KINDS if k in table.index]
    return table.reindex(order).fillna(0).astype(int).rename_axis("claim_kind")


def kinds_line(kinds: pd.DataFrame) -> str:
    """``claims by kind: behaviour 8 of 8, existence 20 of 24, ... pass``."""
    parts = [f"{kind} {r['passed']} of {r['applicable']}" for kind, r in kinds.iterrows()]
    return f"claims by kind: {', '.join(parts) or 'none'} pass"


def central_claims(audit: pd.DataFrame) -> pd.DataFrame:
    """Per study with central claims: ``central`` (how many), ``passed``, ``applicable`` and
    ``holds`` (every central claim passed; NA where none was applicable, on another family)."""
    claims = audit[(audit["kind"] == "claim") & audit["central"].astype(bool)]
    applicable = claims["status"] != NOT_APPLICABLE
    table = pd.DataFrame(
        {
            "central": claims.groupby("study").size(),
            "passed": claims["passed"].astype(bool).groupby(claims["study"]).sum(),
            "applicable": applicable.groupby(claims["study"]).sum(),
        }
    ).astype(int)
    holds = (table["passed"] == table["central"]).astype("boolean")
    holds[table["applicable"] == 0] = pd.NA
    return table.assign(holds=holds).rename_axis("study")


def central_line(central: pd.DataFrame) -> str:
    """``central claims: 3 of 5 studies (arithmetic, poems, refusals)``."""
    tested = central[central["holds"].notna()]
    holding = [s for s, h in tested["holds"].items() if h]
    names = ", ".join(holding) or "none"
    return f"central claims: {len(holding)} of {len(tested)} studies ({names})"


def _counts(rows: pd.DataFrame) -> str:
    counts = rows["status"].value_counts()
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "none"


_LEGEND = (
    "Each claim has a kind: `behaviour` (what the model does), `existence` (features or a "
    "structure are found), `mechanism` (an intervention moves the output), `control` (an edit "
    "that should not move it does not). A rate carries its n and a 95% interval (Wilson for a "
    "share of rows, a seeded percentile bootstrap for a mean or median; none for a sum, count, "
    "minimum, maximum or single value). A behaviour or existence claim passes when its measured "
    "value meets the threshold of its study.yaml; a mechanism or control claim with an interval "
    "passes only when the interval's far bound meets it too (the lower bound for `>=`, the "
    "upper bound for `<=`), and on its measured value where it has no interval. "
    "`missing_table` and `error` (no rows, no column) never pass. A figure is `ok` when every "
    "table it was drawn from still has the recorded SHA-256, `stale` when one changed since, "
    "`orphaned` when its provenance sidecar or a table is gone, `missing` when study.yaml "
    "declares it but it was never drawn. On a run of a released model (no ground truth), claims "
    "and figures written for another prompt family are `not_applicable`: not measured, neither "
    "passed nor failed, and left out of the verdict. A study's central claim (its claims "
    "marked `central: true` in study.yaml) holds when every one of them passes."
)


def render_markdown(audit: pd.DataFrame, studies: list[Study], results_dir: Path) -> str:
    """The audit as Markdown: verdict and counts, then per study its claims and figures."""
    lines = [f"# Audit of `{results_dir.as_posix()}`", "", f"**{summary_line(audit)}**", ""]
    kinds = claims_by_kind(audit)
    lines += [f"**{kinds_line(kinds)}**", ""] + _kinds_table(kinds) + [""]
    central = central_claims(audit)
    if len(central):
        lines += [f"**{central_line(central)}**", ""] + _central_table(central, audit) + [""]
    lines += _count_table(audit) + ["", _LEGEND]
    for study in studies:
        heading = f"## Study `{study.name}`: {study.title}"
        lines += ["", heading + (f" ({study.paper_section})" if study.paper_section else ""), ""]
        rows = audit[audit["study"] == study.name]
        lines += _claims_table(rows[rows["kind"] == "claim"]) + [""]
        lines += _figures_table(rows[rows["kind"] == "figure"])
    run_level = audit[audit["study"] == RUN_LEVEL]
    if len(run_level):
        lines += ["", "## Run figures (outside studies)", ""] + _figures_table(run_level)
    return "\n".join(lines) + "\n"


def _count_table(audit: pd.DataFrame) -> list[str]:
    header = ["check", "total", "passed", "not passed", "by status"]
    lines = [_row(header), _row(["---"] * len(header))]
    for kind in ("claim", "figure"):
        rows = audit[audit["kind"] == kind]
        passed = int(rows["passed"].sum())
        lines.append(_row([f"{kind}s", len(rows), passed, len(rows) - passed, _counts(rows)]))
    return lines


_KIND_RULES = {
    "behaviour": "measured value",
    "existence": "measured value",
    "mechanism": "95% interval's far bound (lower for >=, upper for <=)",
    "control": "95% interval's far bound (upper for <=)",
}


def _kinds_table(kinds: pd.DataFrame) -> list[str]:
    header = ["kind", "applicable", "passed", "judged on", "judged on an interval"]
    lines = [_row(header), _row(["---"] * len(header))]
    for kind, r in kinds.iterrows():
        cells = [kind, r["applicable"], r["passed"], _KIND_RULES.get(kind, ""), r["interval"]]
        lines.append(_row(cells))
    return lines


def _central_table(central: pd.DataFrame, audit: pd.DataFrame) -> list[str]:
    lines = [_row(["study", "central claim", "passed", "claims"]), _row(["---"] * 4)]
    for study, r in central.iterrows():
        if pd.isna(r["holds"]):
            verdict = f"➖ {NOT_APPLICABLE}"
        else:
            verdict = "✅ holds" if r["holds"] else "❌ does not hold"
        rows = audit[(audit["study"] == study) & audit["central"].astype(bool)]
        ids = "; ".join(
            f"{_symbol(c.status, c.passed)} `{c.item}` {measured_text(c)}"
            for c in rows.itertuples()
        )
        lines.append(_row([study, verdict, f"{r['passed']}/{r['central']}", ids]))
    return lines


def measured_text(r) -> str:
    """``0.917 [0.646, 0.985] (n = 12)``: the value of an audit row (a namedtuple), with its 95%
    interval where it has one."""
    if pd.isna(r.measured):
        return "—"
    text = f"{r.measured:.3g}"
    if r.interval not in (NONE, None) and not pd.isna(r.ci_low):
        text += f" [{r.ci_low:.3g}, {r.ci_high:.3g}]"
    return text + (f" (n = {r.n})" if not pd.isna(r.n) else "")


def _claims_table(claims: pd.DataFrame) -> list[str]:
    if claims.empty:
        return ["No claims."]
    header = ["claim", "kind", "statement", "measured [95% interval] (n)", "test", "judged on"]
    header += ["paper", "status", "detail"]
    out = [_row(header), _row(["---"] * len(header))]
    for r in claims.itertuples():
        ref = f"({r.paper_ref})" if r.paper_ref else ""
        paper = " ".join(x for x in (r.paper_value, ref) if x)
        item = f"{r.item} (central)" if r.central else r.item
        interval = "" if r.interval in (NONE, None) else f"{r.interval} "
        judged = f"{interval}{r.rule}" if r.rule == INTERVAL else r.rule
        test = f"{r.op} {r.threshold:g}"
        cells = [item, r.claim_kind, r.statement, measured_text(r), test, judged, paper]
        out.append(_row([*cells, _mark(r.status, r.passed), r.detail]))
    return out


def _figures_table(figures: pd.DataFrame) -> list[str]:
    if figures.empty:
        return ["No figures."]
    out = [_row(["figure", "tables", "status", "detail"]), _row(["---"] * 4)]
    for r in figures.itertuples():
        out.append(_row([r.item, r.table, _mark(r.status, r.passed), r.detail]))
    return out


def _mark(status: str, passed: bool) -> str:
    return f"{_symbol(status, passed)} {status}"


def _symbol(status: str, passed: bool) -> str:
    return "➖" if status == NOT_APPLICABLE else "✅" if passed else "❌"


def _row(cells: list) -> str:
    text = [str(c).replace("|", "\\|").replace("\n", " ") for c in cells]
    return "| " + " | ".join(text) + " |"
