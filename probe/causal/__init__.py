"""Causal checks: detector head lists tested by intervening on them (masking curves, ablations).

They need both a detector's output (``probe.detect``) and an intervention (``interventions``), so
they sit above both in the layer order: ``probe.causal.retrieval.masking_curve`` /
``niah_recall`` and ``probe.causal.arithmetic.ablation`` / ``accuracy``.
"""
