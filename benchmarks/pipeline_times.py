"""Where did a run's time go? Every rule's wall time, peak memory and place in the timeline.

Every Snakemake rule of the organism pipeline writes a benchmark file
(`results/<run>/benchmarks/<rule>[_<wildcard>].tsv`, `benchmarks/studies/<study>/analysis.tsv`:
seconds, max RSS, ...) when its job ends.
Its modification time is the job's end, so `end - seconds` is its start. From these this script
prints, for one run:

- one row per job in start order: start and end (seconds after the first job started), wall
  time, peak RSS, and its share of the whole DAG's wall time;
- the time per study (analysis and claims jobs);
- the whole DAG's wall time (first start to last end), and the ratio of busy core-seconds to
  available ones (how well the two cores were kept busy; rules use 1 or 2 threads).

    python benchmarks/pipeline_times.py results/organism

A job that was not re-run keeps its old benchmark file: time a run from scratch
(`rm -rf results/<run>` first) or the timeline mixes runs (the script leaves out, with a
warning, jobs that ended over an hour before the last job started).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

STALE_GAP_S = 3600  # a job that ended this long before the others belongs to another run


def read_benchmarks(run: Path) -> pd.DataFrame:
    folder = run / "benchmarks"
    files = sorted(folder.rglob("*.tsv"))
    if not files:
        sys.exit(f"{folder} has no benchmark files: run `snakemake --cores all` for {run} first")
    rows = []
    for f in files:
        table = pd.read_csv(f, sep="\t")
        if table.empty:
            continue
        seconds = float(table["s"].iloc[-1])
        end = f.stat().st_mtime
        rows.append({
            "job": str(f.relative_to(folder).with_suffix("")), "start": end - seconds,
            "end": end, "wall_s": seconds, "max_rss_mb": float(table["max_rss"].iloc[-1]),
        })  # fmt: skip
    jobs = pd.DataFrame(rows).sort_values("start", ignore_index=True)
    stale = jobs["end"] < jobs["start"].max() - STALE_GAP_S
    if stale.any():
        print(f"warning: older benchmark files left out: {', '.join(jobs.loc[stale, 'job'])}\n")
        jobs = jobs[~stale].reset_index(drop=True)
    return jobs


def main(run: Path) -> None:
    jobs = read_benchmarks(run)
    t0, total = jobs["start"].min(), jobs["end"].max() - jobs["start"].min()
    table = jobs.assign(
        start=(jobs["start"] - t0).round(0),
        end=(jobs["end"] - t0).round(0),
        share=(jobs["wall_s"] / total).round(3),
    )
    print(table.round({"wall_s": 1, "max_rss_mb": 0}).to_string(index=False))
    studies = jobs[jobs["job"].str.startswith("studies/")].copy()
    if not studies.empty:
        parts = studies["job"].str.split("/", expand=True)
        studies["study"], studies["step"] = parts[1], parts[2]
        per = studies.pivot_table(index="study", columns="step", values="wall_s", aggfunc="sum")
        per["total"] = per.sum(axis=1)
        print("\nseconds per study (wall time of its jobs):")
        print(per.round(1).to_string())
    print(f"\nwhole DAG: {total / 60:.1f} min ({total:.0f} s) from the first job's start")
    print(f"job-seconds / DAG seconds: {jobs['wall_s'].sum() / total:.2f} (2 cores)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/organism"))
