# A released model instead of the organism (config `pretrained:`, e.g. config/gemma-2-2b.yaml):
# download -> trace the paper prompts -> faithfulness; the studies and the audit follow as usual.
# The two download rules are the ONLY rules that use the network. They run on the submitting
# host (localrules: cluster nodes often have no internet) and write plain directories under
# resources/ (pretrained.cache_dir), at pretrained.model_revision / transcoder_revision (the log
# prints the commit a branch resolved to, to pin). Gated models (Gemma-2, Llama-3.2) need a token
# first: `hf auth login` once, or HF_TOKEN in the environment. Every later rule reads only those
# directories. The GPU rules ask for gpu=1; profiles/default caps a local run at one GPU.
from llmbio.pretrained import model_dir, transcoder_dir

MODEL_DIR = str(model_dir(CFG.pretrained))
TRANSCODER_DIR = str(transcoder_dir(CFG.pretrained))
# one GPU for the rules that run the model; cluster profiles turn these into sbatch options
GPU = dict(gpu=1, gpu_mem_mb=CFG.pretrained.gpu_mem_mb, mem_mb=48000)


localrules:
    download_model,
    download_transcoder,


rule download_model:  # NETWORK
    output:
        directory(MODEL_DIR),
    params:
        repo=CFG.pretrained.model,
    log:
        f"{R}/logs/download_model.log",
    retries: 2
    script:
        "../scripts/download.py"


rule download_transcoder:  # NETWORK
    output:
        directory(TRANSCODER_DIR),
    params:
        repo=CFG.pretrained.transcoder,
    log:
        f"{R}/logs/download_transcoder.log",
    retries: 2
    script:
        "../scripts/download.py"


rule trace_graphs:
    input:
        model=MODEL_DIR,
        transcoder=TRANSCODER_DIR,
    output:
        graphs=directory(f"{R}/graphs/showcase"),
        scores=f"{R}/graphs/scores.parquet",
    log:
        f"{R}/logs/trace_graphs.log",
    benchmark:
        f"{R}/benchmarks/trace_graphs.tsv"
    threads: CFG.trace.threads
    resources:
        runtime=60,
        **GPU,
    script:
        "../scripts/trace_graphs_pretrained.py"


rule faithfulness:
    input:
        model=MODEL_DIR,
        transcoder=TRANSCODER_DIR,
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
    resources:
        runtime=60,
        **GPU,
    script:
        "../scripts/faithfulness_pretrained.py"
