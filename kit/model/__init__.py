"""The networks and what they learn: Haiku networks (networks), what each network's heads
predict and learn from each row (tasks), and augmentation on the device (augment).
"""
