"""`make cv REMOTE=kaggle`: the kit's code bundled into a Kaggle kernel's script (code), pushed,
watched until it ends and its runs brought back into cv/ (kernels).
"""
