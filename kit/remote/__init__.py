"""`make cv REMOTE=kaggle`: the kit's code bundled into a Kaggle kernel, pushed, watched and
its runs brought back into cv/ (kernels).
"""
