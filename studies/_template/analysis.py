"""Template analysis: the model's next-token prediction on each of the study's prompts.

Snakemake's `study_analysis` rule calls ``run(context)``; ``context.run`` opens the run's
model, tokenizer, transcoder and world (``llmbio.run.Run``), and ``llmbio.studies.StudyContext``
has the table / figure helpers. Write tables first,
then draw figures from those tables only.
"""

import matplotlib.pyplot as plt
import pandas as pd
import torch

from llmbio.studies import Prompt, StudyContext
from llmbio.tokenizer import UnknownTokenError, encode


def run(context: StudyContext) -> None:
    model, tokenizer = context.run.model, context.run.tokenizer
    rows = [predict(model, tokenizer, p) for p in context.prompts("organism")]
    context.save_table(pd.DataFrame(rows), "predictions")
    context.draw_figure("target_probability", plot_target_probability, ["predictions"])


@torch.no_grad()
def predict(model, tokenizer, prompt: Prompt) -> dict:
    row = {"prompt_id": prompt.id, "target": prompt.target, "top_token": "", "p_target": 0.0}
    try:
        ids = encode(tokenizer, prompt.text)
    except UnknownTokenError as err:  # this world may not have the prompt's words
        print(f"skip {prompt.id}: {err}")
        return {**row, "correct": False}
    probs = model(input_ids=torch.tensor([ids])).logits[0, -1].softmax(-1)
    target = tokenizer.convert_tokens_to_ids(prompt.target)
    top = int(probs.argmax())
    return {
        **row,
        "top_token": tokenizer.convert_ids_to_tokens(top),
        "p_target": float(probs[target]),
        "correct": top == target,
    }


def plot_target_probability(predictions: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar(predictions["prompt_id"], predictions["p_target"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("p(expected answer)")
    fig.tight_layout()
    return fig
