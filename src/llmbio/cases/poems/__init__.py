"""The ``poems`` study: couplets and plan supernodes (:mod:`.planning`), the experiments on the
held-out line form (:mod:`.experiment`), and the calibrated plan swap (:mod:`.swaps`)."""
