"""The engine's version: part of every run's config hash, so a change of semantics or numbers
(a new fill rule, a metric formula) invalidates cached results. Bump it with any such change."""

ENGINE_VERSION = "1.1.0"  # 1.1: psr and sharpe_se in every run's metrics
