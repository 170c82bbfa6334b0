from llmbio.figures import draw_figure
from llmbio.logs import log_to
from llmbio.organism import plot_training_curve

with log_to(snakemake.log[0]):
    draw_figure(plot_training_curve, snakemake.output[0], [snakemake.input.curve])
