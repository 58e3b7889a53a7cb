"""Stitch's adapter training library."""
