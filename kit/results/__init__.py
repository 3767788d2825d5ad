"""What a finished run means: the leaderboard-style report and its pictures (report, plots),
label-noise flags (label_noise), OOF-weighted ensembles of runs (ensemble), and a second
pass taught by a finished run (teacher).
"""
