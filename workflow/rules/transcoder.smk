# Transcoders: activation cache -> CLT (+ PLT of the same size) -> evaluation.

TRANSCODERS = ["clt", "plt"] if CFG.transcoder_eval.compare_plt else ["clt"]


rule cache_activations:
    input:
        corpus=f"{R}/corpus.parquet",
        model=f"{R}/model",
    output:
        directory(f"{R}/activations"),
    log:
        f"{R}/logs/cache_activations.log",
    benchmark:
        f"{R}/benchmarks/cache_activations.tsv"
    # one thread (the same cache, byte for byte, as with two and as fast: the stage is mostly
    # tokenising and writing), and first in line, so it runs beside the behaviour evaluation
    # instead of after it; the CLT, which gates everything downstream, comes next
    threads: CFG.trace.threads
    priority: 20
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/cache_activations.py"


rule train_transcoder:
    input:
        cache=f"{R}/activations",
        # the PLT, only compared with the CLT, trains after it, beside the studies: were both
        # ready at once, a PLT started on a free core would hold the two-thread CLT back
        after=lambda wc: [f"{R}/transcoder/clt"] if wc.kind != "clt" else [],
    output:
        transcoder=directory(f"{R}/transcoder/{{kind}}"),
        train_log=f"{R}/transcoder/{{kind}}_train_log.parquet",
    params:
        work_dir=lambda wc: f"{R}/.checkpoints/{wc.kind}",
    wildcard_constraints:
        kind="clt|plt",
    log:
        f"{R}/logs/train_transcoder_{{kind}}.log",
    benchmark:
        f"{R}/benchmarks/train_transcoder_{{kind}}.tsv"
    # the same thread counts as llmbio.stages.transcoder.train_stage uses: the PLT takes an
    # analysis job's and runs beside the studies instead of before them
    threads: lambda wc: CFG.train.threads if wc.kind == "clt" else CFG.trace.threads
    # the PLT -> evaluation chain is the longest job left once the CLT is done: start it first
    priority: 10
    resources:
        mem_mb=4000,
        runtime=15,
    script:
        "../scripts/train_transcoder.py"


rule evaluate_transcoder:
    input:
        cache=f"{R}/activations",
        model=f"{R}/model",
        world=f"{R}/world.json",
        transcoders=expand(f"{R}/transcoder/{{kind}}", kind=TRANSCODERS),
    output:
        table=f"{R}/transcoder/eval.parquet",
        figure=report(
            f"{R}/figures/transcoder_eval.png",
            caption="../report/transcoder_eval.rst",
            category="Transcoder",
        ),
    log:
        f"{R}/logs/evaluate_transcoder.log",
    benchmark:
        f"{R}/benchmarks/evaluate_transcoder.tsv"
    threads: CFG.trace.threads
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/evaluate_transcoder.py"
