"""The only place that parses arguments and prints: the verbs of `python -m kit` (main), the
remote verbs (remote_verbs), the console and its tables (console), the live progress of
a CV run (display), and the same verbs as functions for a notebook's cells (notebook).
"""
