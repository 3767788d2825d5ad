"""From a run to Kaggle's leaderboard: the submission file and its manifest (submission),
its validation and scoring against a solution file (validate), and the ledger of uploads
and scores (ledger).
"""
