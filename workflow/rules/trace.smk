# Attribution graphs of the run's showcase prompts (config `trace.prompts`, or one paper-style
# prompt per behaviour from the world).


rule trace_graphs:
    input:
        model=f"{R}/model",
        transcoder=f"{R}/transcoder/clt",
        world=f"{R}/world.json",
    output:
        graphs=directory(f"{R}/graphs/showcase"),
        scores=f"{R}/graphs/scores.parquet",
    log:
        f"{R}/logs/trace_graphs.log",
    benchmark:
        f"{R}/benchmarks/trace_graphs.tsv"
    threads: CFG.trace.threads
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/trace_graphs.py"


rule faithfulness:
    input:
        model=f"{R}/model",
        transcoder=f"{R}/transcoder/clt",
        graphs=f"{R}/graphs/showcase",
    output:
        table=f"{R}/graphs/faithfulness.parquet",
        figure=report(
            f"{R}/figures/faithfulness.png",
            caption="../report/faithfulness.rst",
            category="Attribution graphs",
        ),
    log:
        f"{R}/logs/faithfulness.log",
    benchmark:
        f"{R}/benchmarks/faithfulness.tsv"
    threads: CFG.trace.threads
    script:
        "../scripts/faithfulness.py"
