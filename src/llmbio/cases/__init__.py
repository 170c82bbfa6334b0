"""The case studies' own code, one package per study, named after its ``studies/<name>/`` folder.

A study's ``analysis.py`` imports its package; the framework that runs every study (spec,
schema, runner, claims, rules, generic) is :mod:`llmbio.studies` and never imports a case.
The ``study_analysis`` rule tracks every module of ``llmbio.cases.<name>``, so editing one
reruns that study.
"""
