"""The ``multihop`` study: state supernodes and calibrated state swaps (:mod:`.swaps`)."""
