# The model organism: world -> corpus -> tokenizer -> trained model -> behaviour table.


rule world:
    output:
        f"{R}/world.json",
    log:
        f"{R}/logs/world.log",
    benchmark:
        f"{R}/benchmarks/world.tsv"
    script:
        "../scripts/world.py"


rule corpus:
    input:
        world=f"{R}/world.json",
    output:
        f"{R}/corpus.parquet",
    log:
        f"{R}/logs/corpus.log",
    benchmark:
        f"{R}/benchmarks/corpus.tsv"
    script:
        "../scripts/corpus.py"


rule tokenizer:
    input:
        world=f"{R}/world.json",
        corpus=f"{R}/corpus.parquet",
    output:
        directory(f"{R}/tokenizer"),
    log:
        f"{R}/logs/tokenizer.log",
    benchmark:
        f"{R}/benchmarks/tokenizer.tsv"
    script:
        "../scripts/tokenizer.py"


rule train_model:
    input:
        corpus=f"{R}/corpus.parquet",
        tokenizer=f"{R}/tokenizer",
    output:
        model=directory(f"{R}/model"),
        curve=f"{R}/training_curve.parquet",
    params:
        checkpoint_dir=f"{R}/.checkpoints/model",
    log:
        f"{R}/logs/train_model.log",
    benchmark:
        f"{R}/benchmarks/train_model.tsv"
    threads: CFG.train.threads
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/train_model.py"


rule training_curve_figure:
    input:
        curve=f"{R}/training_curve.parquet",
    output:
        report(
            f"{R}/figures/training_curve.png",
            caption="../report/training_curve.rst",
            category="Organism",
        ),
    log:
        f"{R}/logs/training_curve_figure.log",
    benchmark:
        f"{R}/benchmarks/training_curve_figure.tsv"
    script:
        "../scripts/training_curve_figure.py"


rule behaviour:
    input:
        world=f"{R}/world.json",
        model=f"{R}/model",
    output:
        summary=f"{R}/behaviour.parquet",
        per_prompt=f"{R}/behaviour_items.parquet",
        figure=report(
            f"{R}/figures/behaviour.png",
            caption="../report/behaviour.rst",
            category="Organism",
        ),
    log:
        f"{R}/logs/behaviour.log",
    benchmark:
        f"{R}/benchmarks/behaviour.tsv"
    threads: CFG.trace.threads
    script:
        "../scripts/behaviour.py"
