from llmbio.logs import log_to
from llmbio.organism import plot_training_curve

with log_to(snakemake.log[0]):
    plot_training_curve(snakemake.input.curve, snakemake.output[0])
