"""The competition's files, from the archive to arrays: unpacking (archive), fetching it
(download), parsing the CSVs strictly (csv_fields, tables: TrainingSet, TestSet,
LookupTable) and caching them as arrays (cache), the lookup table's rules (lookup: which
block a test face is in, which model answers each row), and a synthetic competition for demos
and tests (synth).
"""
