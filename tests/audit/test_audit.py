"""run_audit over a hand-made results folder: claims, figure provenance, strict mode."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from llmbio.audit import AUDIT_COLUMNS, AuditFailed, run_audit  # noqa: E402
from llmbio.figures import draw_figure  # noqa: E402

STUDY = """\
name: demo
title: Demo study
paper_section: Biology §4
figures:
  - {id: bars, kind: bar, table: tables/t.parquet, caption: Bars.}
  - {id: never, kind: bar, table: tables/t.parquet, caption: Never drawn.}
claims:
  - {id: holds, statement: v reaches 2, table: tables/t.parquet, column: v, aggregate: max,
     kind: behaviour, op: ">=", threshold: 2, paper_value: 2.5, paper_ref: Fig. 1}
  - {id: fails, kind: behaviour, statement: "v | mean above 5", table: tables/t.parquet, column: v,
     aggregate: mean, op: ">", threshold: 5}
  - {id: absent, kind: behaviour, statement: no table, table: tables/absent.parquet, column: v,
     aggregate: mean, op: ">", threshold: 0}
"""


def _bars(table):
    fig, ax = plt.subplots()
    ax.bar(table["k"], table["v"])
    return fig


@pytest.fixture
def run(tmp_path):
    (tmp_path / "studies" / "demo").mkdir(parents=True)
    (tmp_path / "studies" / "demo" / "study.yaml").write_text(STUDY)
    out = tmp_path / "results" / "run"
    table = out / "studies" / "demo" / "tables" / "t.parquet"
    table.parent.mkdir(parents=True)
    pd.DataFrame({"k": ["a", "b"], "v": [1.0, 2.0]}).to_parquet(table)
    draw_figure(_bars, out / "studies" / "demo" / "figures" / "bars.png", [table])
    draw_figure(_bars, out / "figures" / "run_level.png", [table])
    (out / ".checkpoints").mkdir()
    plt.subplots()[0].savefig(out / ".checkpoints" / "scratch.png")  # hidden: not a result
    return tmp_path, out, table


def _audit(tmp_path, out, **kw):
    audit, markdown = run_audit(out, tmp_path / "studies", **kw)
    return audit.set_index("item"), markdown


def test_audit_reports_claims_and_figures(run):
    tmp_path, out, _ = run
    audit, markdown = _audit(tmp_path, out)
    assert list(audit.reset_index()[AUDIT_COLUMNS].columns) == AUDIT_COLUMNS
    assert audit.loc[["holds", "fails", "absent"], "status"].tolist() == [
        "pass", "fail", "missing_table",
    ]  # fmt: skip
    assert audit.loc["holds", "measured"] == 2.0 and audit.loc["holds", "paper_value"] == "2.5"
    figures = audit[audit["kind"] == "figure"]["status"].to_dict()
    assert figures == {
        "studies/demo/figures/bars.png": "ok",
        "figures/run_level.png": "ok",
        "studies/demo/figures/never.png": "missing",
    }
    assert audit.loc["figures/run_level.png", "study"] == ""
    assert pd.read_parquet(out / "audit.parquet").shape[0] == len(audit)
    assert (out / "audit.md").read_text() == markdown
    assert "audit FAIL: claims 1/3 pass" in markdown.splitlines()[2]
    assert "## Study `demo`: Demo study (Biology §4)" in markdown
    assert "v \\| mean above 5" in markdown  # pipes in text do not break the table


def test_a_hand_edited_table_makes_its_figures_stale(run):
    tmp_path, out, table = run
    pd.DataFrame({"k": ["a", "b"], "v": [1.0, 9.0]}).to_parquet(table)
    audit, markdown = _audit(tmp_path, out)
    stale = audit.loc["studies/demo/figures/bars.png"]
    assert (stale["status"], stale["passed"]) == ("stale", False)
    assert audit.loc["figures/run_level.png", "status"] == "stale"
    assert audit.loc["fails", "status"] == "fail"  # claims re-read the edited table: mean 5
    assert "❌ stale" in markdown


def test_a_figure_without_sidecar_is_orphaned(run):
    tmp_path, out, _ = run
    (out / "figures" / "run_level.png.provenance.json").unlink()
    audit, _ = _audit(tmp_path, out)
    assert audit.loc["figures/run_level.png", "status"] == "orphaned"


def test_strict_raises_after_writing_the_report(run):
    tmp_path, out, _ = run
    with pytest.raises(AuditFailed, match="audit FAIL"):
        _audit(tmp_path, out, strict=True)
    assert (out / "audit.md").exists() and (out / "audit.parquet").exists()


def test_strict_passes_when_everything_holds(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    audit, markdown = run_audit(out, tmp_path / "no_studies", strict=True)
    assert audit.empty and "audit PASS" in markdown


CENTRAL_STUDY = """\
name: {name}
title: {name}
claims:
  - {{id: a, statement: a, table: tables/t.parquet, column: v, aggregate: max, op: ">=",
     kind: behaviour, threshold: {a}, central: true}}
  - {{id: b, statement: b, table: tables/t.parquet, column: v, aggregate: min, op: ">=",
     kind: behaviour, threshold: 1, central: true, families: [{family}]}}
  - {{id: side, statement: side, table: tables/t.parquet, column: v, aggregate: max, op: ">",
     kind: behaviour, threshold: 9}}
"""


def _central_run(tmp_path, studies: dict) -> tuple:
    for name, (a, family) in studies.items():
        folder = tmp_path / "studies" / name
        folder.mkdir(parents=True)
        folder.joinpath("study.yaml").write_text(
            CENTRAL_STUDY.format(name=name, a=a, family=family)
        )
        table = tmp_path / "results" / "studies" / name / "tables" / "t.parquet"
        table.parent.mkdir(parents=True)
        pd.DataFrame({"v": [1.0, 2.0]}).to_parquet(table)
    return run_audit(tmp_path / "results", tmp_path / "studies")


def test_a_central_claim_holds_when_all_its_claims_pass(tmp_path):
    audit, markdown = _central_run(
        tmp_path,
        {
            "fine": (2, "organism"),  # a and b pass; `side` fails but is not central
            "broken": (3, "organism"),  # a fails
            "elsewhere": (2, "gemma-2-2b"),  # b not applicable: a pass is not the whole claim
        },
    )
    claims = audit[audit["kind"] == "claim"].set_index(["study", "item"])
    assert claims["central"].to_dict() == {
        (s, i): i != "side" for s in ("broken", "elsewhere", "fine")
        for i in ("a", "b", "side")
    }  # fmt: skip
    assert not audit.loc[audit["kind"] == "figure", "central"].any()
    saved = pd.read_parquet(tmp_path / "results" / "audit.parquet")
    assert saved["central"].dtype == bool
    head = markdown.split("## Study", 1)[0]
    assert "**central claims: 1 of 3 studies (fine)**" in head
    assert "| fine | ✅ holds | 2/2 | ✅ `a` 2 (n = 2); ✅ `b` 1 (n = 2) |" in head
    assert "| broken | ❌ does not hold | 1/2 | ❌ `a` 2 (n = 2); ✅ `b` 1 (n = 2) |" in head
    assert "| elsewhere | ❌ does not hold | 1/2 |" in head
    assert "| a (central) |" in markdown and "| side |" in markdown


def test_a_central_claim_of_another_family_is_not_counted(tmp_path):
    folder = tmp_path / "studies" / "paper"
    folder.mkdir(parents=True)
    folder.joinpath("study.yaml").write_text(
        "name: paper\ntitle: paper\nclaims:\n"
        "  - {id: a, statement: a, table: tables/t.parquet, column: v, aggregate: max,\n"
        '     kind: behaviour, op: ">=", threshold: 1, central: true, families: [gemma-2-2b]}\n'
    )
    _, markdown = _central_run(tmp_path, {"fine": (2, "organism")})
    assert "**central claims: 1 of 1 studies (fine)**" in markdown
    assert "| paper | ➖ not_applicable | 0/1 | ➖ `a` — |" in markdown


KINDS_STUDY = """\
name: kinds
title: Kinds
claims:
  - {id: answers, kind: behaviour, statement: s, table: tables/t.parquet, column: ok,
     aggregate: share_true, op: ">=", threshold: 0.9}
  - {id: found, kind: existence, statement: s, table: tables/t.parquet, column: found,
     aggregate: sum, op: ">=", threshold: 1}
  - {id: swap, kind: mechanism, central: true, statement: s, table: tables/t.parquet,
     column: ok, aggregate: share_true, op: ">=", threshold: 0.9}
  - {id: control, kind: control, statement: s, table: tables/t.parquet, column: flipped,
     aggregate: share_true, op: "<=", threshold: 0.1}
"""


def test_the_headline_counts_passes_per_kind_and_shows_intervals(tmp_path):
    folder = tmp_path / "studies" / "kinds"
    folder.mkdir(parents=True)
    folder.joinpath("study.yaml").write_text(KINDS_STUDY)
    table = tmp_path / "results" / "studies" / "kinds" / "tables" / "t.parquet"
    table.parent.mkdir(parents=True)
    # 19 of 20 right: 0.95 clears 0.9 as a point, its Wilson lower bound (0.764) does not
    ok = [True] * 19 + [False]
    pd.DataFrame({"ok": ok, "found": [1] * 20, "flipped": [False] * 20}).to_parquet(table)
    audit, markdown = run_audit(tmp_path / "results", tmp_path / "studies")
    claims = audit.set_index("item")
    assert claims.loc["answers", "status"] == "pass" and claims.loc["swap", "status"] == "fail"
    assert claims.loc["swap", ["n", "interval", "rule"]].tolist() == [20, "wilson", "interval"]
    assert claims.loc["swap", "ci_low"] == pytest.approx(0.7639, abs=5e-5)
    # no flip in 20: the upper bound 0.161 does not stay under 0.1
    assert claims.loc["control", "ci_high"] == pytest.approx(0.1611, abs=5e-5)
    line = "claims by kind: behaviour 1 of 1, existence 1 of 1, mechanism 0 of 1, control 0 of 1"
    head = markdown.split("## Study", 1)[0]
    assert f"**{line} pass**" in head
    assert (
        "| mechanism | 1 | 0 | 95% interval's far bound (lower for >=, upper for <=) | 1 |" in head
    )
    assert "❌ `swap` 0.95 [0.764, 0.991] (n = 20)" in head
    assert "| swap (central) | mechanism | s | 0.95 [0.764, 0.991] (n = 20) | >= 0.9 |" in markdown
    assert "| found | existence | s | 20 (n = 20) | >= 1 | point |" in markdown
    saved = pd.read_parquet(tmp_path / "results" / "audit.parquet")
    assert list(saved.columns) == AUDIT_COLUMNS and saved["n"].dtype == "Int64"
