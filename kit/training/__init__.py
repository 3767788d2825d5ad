"""Training on the device: the pure pieces and the jitted `train_step` (train), the compiled
programs built from it (programs), the loop over a network's folds (loop) with held
Ctrl-C/SIGTERM (interrupts), checkpoints (checkpoints), and how the
process meets the hardware before JAX starts (runtime, allocator).
"""
