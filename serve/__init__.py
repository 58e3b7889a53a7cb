"""Stitch's inference server."""
