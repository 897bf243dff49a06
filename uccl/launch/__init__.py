"""Launchers: uccl-run (torchrun with uccl options)."""
