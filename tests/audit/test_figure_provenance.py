"""save_figure's sidecar and check_figure: ok, stale after a table edit, orphaned."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import llmbio  # noqa: E402
from llmbio.figures import check_figure, draw_figure, save_figure, sha256_of, sidecar_path  # noqa: E402


def _bars(table: pd.DataFrame):
    fig, ax = plt.subplots()
    ax.bar(table["k"], table["v"])
    return fig


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "tables" / "t.parquet"
    path.parent.mkdir()
    pd.DataFrame({"k": ["a", "b"], "v": [1.0, 2.0]}).to_parquet(path)
    return path


def test_sidecar_records_digests_and_version(tmp_path, table):
    png = draw_figure(_bars, tmp_path / "figures" / "f.png", [table], caption="Two bars.")
    record = json.loads(sidecar_path(png).read_text())
    assert sidecar_path(png).name == "f.png.provenance.json"
    assert record["code_version"] == llmbio.__version__
    assert record["caption"] == "Two bars."
    assert record["tables"] == [{"path": "../tables/t.parquet", "sha256": sha256_of(table)}]
    assert check_figure(png).status == "ok"


def test_editing_a_table_after_drawing_makes_the_figure_stale(tmp_path, table):
    png = draw_figure(_bars, tmp_path / "f.png", [table])
    pd.DataFrame({"k": ["a", "b"], "v": [1.0, 3.0]}).to_parquet(table)  # a hand edit
    check = check_figure(png)
    assert check.status == "stale" and "t.parquet" in check.detail


def test_missing_sidecar_or_table_orphans_the_figure(tmp_path, table):
    png = draw_figure(_bars, tmp_path / "f.png", [table])
    table.unlink()
    assert check_figure(png).status == "orphaned"
    fig, _ = plt.subplots()
    fig.savefig(tmp_path / "bare.png")
    assert check_figure(tmp_path / "bare.png").status == "orphaned"


def test_a_moved_results_folder_keeps_its_provenance(tmp_path, table):
    draw_figure(_bars, tmp_path / "figures" / "f.png", [table])
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    tmp_path.rename(moved)
    assert check_figure(moved / "figures" / "f.png").status == "ok"


def test_a_figure_must_name_existing_tables(tmp_path):
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="at least one source table"):
        save_figure(fig, tmp_path / "f.png", [])
    with pytest.raises(FileNotFoundError, match="absent.parquet"):
        save_figure(fig, tmp_path / "f.png", [tmp_path / "absent.parquet"])


def _jittered(table: pd.DataFrame):
    import numpy as np
    import seaborn as sns

    fig, axes = plt.subplots(1, 2)
    long = pd.concat([table] * 20, ignore_index=True)
    long["v"] += np.arange(len(long))
    sns.stripplot(data=long, x="k", y="v", ax=axes[0])  # jitter: NumPy's global state
    sns.barplot(data=long, x="k", y="v", ax=axes[1], seed=0)  # bootstrapped interval
    return fig


def test_the_same_tables_give_the_same_png_bytes(tmp_path, table):
    import numpy as np

    first = draw_figure(_jittered, tmp_path / "a.png", [table]).read_bytes()
    np.random.seed(123)  # whatever the caller did with the global state before
    second = draw_figure(_jittered, tmp_path / "b.png", [table]).read_bytes()
    assert first == second
    assert b"Software" not in first and b"Matplotlib" not in first
    assert not list(tmp_path.glob("*.partial*"))
