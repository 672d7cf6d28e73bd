"""What keeps a researcher honest (see docs/research.md)."""
