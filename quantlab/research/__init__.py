"""What keeps a researcher honest (layer 5: above config, below jobs; docs/research.md): the
look-ahead audit, run diff, confidence intervals."""

from quantlab.research.audit import Audit, audit

__all__ = ["Audit", "audit"]
