"""Feature interpretation.

- :mod:`~llmbio.features.atlas`: top examples, activation statistics and logits per feature;
- :mod:`~llmbio.features.variables` / :mod:`~llmbio.features.labels`: ground-truth world
  variables per token and the feature labels scored against them (organism only);
- :mod:`~llmbio.features.supernodes`: named feature groups and supernode graphs;
- :mod:`~llmbio.features.faithfulness`: graph-predicted vs real ablation effects.
"""
