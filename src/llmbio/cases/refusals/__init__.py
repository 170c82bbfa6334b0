"""The ``refusals`` study: model-free tables (:mod:`.tables`), calibrated harmful-request edits
(:mod:`.swaps`), and the study's figures (:mod:`.figures`)."""
