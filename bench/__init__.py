"""Benchmarks run by `make bench`: replies under load (replies.py) and image preprocessing (images.py)."""
