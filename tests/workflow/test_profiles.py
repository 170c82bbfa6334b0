"""The default workflow profile (profiles/default) keeps GPU jobs one at a time."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# two independent jobs that each ask for the GPU, as the study_analysis jobs of a released run
SNAKEFILE = """
rule all:
    input: ["a.txt", "b.txt"]

rule gpu_job:
    output: "{x}.txt"
    resources: gpu=1
    shell: "python -c 'import time; print(time.time())' > {output}; sleep 1.5; "
           "python -c 'import time; print(time.time())' >> {output}"
"""


def _spans(workdir: Path, *args: str) -> list[tuple[float, ...]]:
    for name in ("a.txt", "b.txt"):
        (workdir / name).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "-q", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return sorted(tuple(map(float, (workdir / n).read_text().split())) for n in ("a.txt", "b.txt"))


def test_default_profile_runs_gpu_jobs_one_at_a_time(tmp_path):
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    first, second = _spans(tmp_path)
    assert second[0] >= first[1]  # the second started after the first ended
    first, second = _spans(tmp_path, "--workflow-profile", "none")
    assert second[0] < first[1]  # without the profile, --cores 2 runs both at once
