# The feature atlas (top contexts, density, output logits) and ground-truth labels.


rule feature_atlas:
    input:
        cache=f"{R}/activations",
        model=f"{R}/model",
        transcoder=f"{R}/transcoder/clt",
        world=f"{R}/world.json",
    output:
        directory(f"{R}/features"),
    log:
        f"{R}/logs/feature_atlas.log",
    benchmark:
        f"{R}/benchmarks/feature_atlas.tsv"
    threads: CFG.trace.threads
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/feature_atlas.py"
