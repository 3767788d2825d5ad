"""What a finished run means: the leaderboard-style report (report) and its pictures (plots for
charts, faces for grids of faces), label-noise flags (label_noise), OOF-weighted ensembles of
runs (ensemble), and a second pass taught by a finished run (teacher).
"""
