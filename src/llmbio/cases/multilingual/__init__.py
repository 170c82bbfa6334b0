"""The ``multilingual`` study: the lexicon's prompts and contrast supernodes (:mod:`.prompts`),
operation / operand / language swaps (:mod:`.swaps`), and feature overlap between languages
(:mod:`.overlap`)."""
