"""The ``arithmetic`` study: operand plots (:mod:`.operand_plots`), the addition grid, feature
transplants and contexts (:mod:`.experiments`), and the study's figures (:mod:`.figures`)."""
