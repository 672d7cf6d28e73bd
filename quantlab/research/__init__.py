"""What keeps a researcher honest (layer 5: above config, below jobs): the look-ahead audit."""

from quantlab.research.audit import Audit, audit

__all__ = ["Audit", "audit"]
