"""A CV run and its folder: the run folder's format, the one reader and writer of each file
(files), naming, finding, `latest` and the lock (folders), the split into folds (folds),
what a network learns from (lessons), cross-validation itself (cv), and predicting with a
finished run, a fold ensemble or an ensemble's members (predict).
"""
