"""Matcher worker: detect, align, embed and score faces for CompareFaces commands."""
