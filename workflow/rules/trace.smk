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
    threads: CFG.trace.threads
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/trace_graphs.py"
