"""kit: a Kaggle kit for Facial Keypoints Detection.

Importing it changes nothing outside it: the entry points (`python -m kit`, the `kit`
command, bench, the tests' conftest) set the process up for JAX with
kit.training.runtime.prepare_process().
"""
