"""The competition's files, from the archive to arrays: unpacking (archive), fetching it
(download), parsing and caching the CSVs into TrainingSet, TestSet and LookupTable
(tables), the lookup table's rules (lookup: which block a test face is in, which model
answers each row), and a synthetic competition for demos and tests (synth).
"""
