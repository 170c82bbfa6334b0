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
  available ones (how well the two cores were kept busy; rules use 1 or 2 threads);
- the critical path: the chain of jobs, following the DAG's dependencies (from
  `snakemake --forceall --dag`, or a saved dot file with `--dag`), whose wall times add up to
  the most; no schedule on any number of cores finishes before it. Ratios: critical path /
  DAG wall time, and the DAG's wall time against its two-core lower bound
  (max(critical path, job-seconds / 2)).

    python benchmarks/pipeline_times.py results/organism [--configfile config/tiny.yaml]

A job that was not re-run keeps its old benchmark file: time a run from scratch
(`rm -rf results/<run>` first) or the timeline mixes runs (the script leaves out, with a
warning, jobs that ended over an hour before the last job started).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

STALE_GAP_S = 3600  # a job that ended this long before the others belongs to another run
REPO = Path(__file__).resolve().parents[1]


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


def dag_dot(configfile: Path | None) -> str:
    """The job graph of the workflow in dot format (every job, as if run from scratch)."""
    cmd = [sys.executable, "-m", "snakemake", "--forceall", "--dag", "--quiet"]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"snakemake --dag failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def job_edges(dot: str) -> list[tuple[str, str]]:
    """``(dependency, job)`` pairs, jobs named as their benchmark files are: ``rule``,
    ``rule_<wildcard values>``, ``studies/<study>/analysis`` and ``studies/<study>/claims``."""
    labels = dict(re.findall(r'^\s*(\d+)\[label = "([^"]*)"', dot, flags=re.M))
    pairs = re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.M)
    names = {}
    for node, label in labels.items():
        rule, *wildcards = label.split("\\n")
        values = [w.split(": ", 1)[1] for w in wildcards]
        names[node] = "_".join([rule, *values])
        if rule == "study_analysis":
            names[node] = f"studies/{values[0]}/analysis"
    for a, b in pairs:  # a study's claims job has no wildcard in the label: its analysis has
        if labels[b] == "study_claims" and names[a].startswith("studies/"):
            names[b] = names[a].replace("/analysis", "/claims")
    return [(names[a], names[b]) for a, b in pairs]


def critical_path(jobs: pd.DataFrame, edges: list[tuple[str, str]]) -> list[str]:
    """The dependency chain with the largest summed wall time (jobs without a benchmark: 0 s)."""
    seconds = dict(zip(jobs["job"], jobs["wall_s"], strict=True))
    before: dict[str, list[str]] = {}
    for dep, job in edges:
        before.setdefault(job, []).append(dep)
    best: dict[str, tuple[float, list[str]]] = {}

    def longest(job: str) -> tuple[float, list[str]]:
        if job not in best:
            chains = [longest(d) for d in before.get(job, [])]
            length, chain = max(chains, default=(0.0, []), key=lambda c: c[0])
            best[job] = (length + seconds.get(job, 0.0), [*chain, job])
        return best[job]

    everything = sorted({j for e in edges for j in e} | set(seconds))
    # on a tie (jobs without a benchmark add 0 s) the chain that reaches further wins, so the
    # answer does not depend on the order of a set
    return max((longest(j) for j in everything), key=lambda c: (c[0], len(c[1])))[1]


def print_critical_path(jobs: pd.DataFrame, edges: list[tuple[str, str]], total: float) -> None:
    seconds = dict(zip(jobs["job"], jobs["wall_s"], strict=True))
    path = [j for j in critical_path(jobs, edges) if j in seconds]
    length = sum(seconds[j] for j in path)
    print("\ncritical path (each job waits for the one before it):")
    for job in path:
        print(f"  {job:<40} {seconds[job]:8.1f} s")
    bound = max(length, jobs["wall_s"].sum() / 2)
    print(f"critical path: {length:.0f} s = {length / total:.2f} of the DAG's wall time")
    print(f"DAG wall time / two-core lower bound (max(critical path, job-seconds / 2)): "
          f"{total / bound:.2f}")  # fmt: skip


def main(run: Path, dot: str | None = None) -> None:
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
    if dot is not None:
        print_critical_path(jobs, job_edges(dot), total)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, nargs="?", default=Path("results/organism"))
    parser.add_argument("--configfile", type=Path, help="the run's config (default: the default)")
    parser.add_argument("--dag", type=Path, help="a saved `snakemake --forceall --dag` dot file")
    parser.add_argument("--no-critical-path", action="store_true", help="skip the DAG")
    args = parser.parse_args()
    dot = None
    if not args.no_critical_path:
        dot = args.dag.read_text() if args.dag else dag_dot(args.configfile)
    main(args.run, dot)
