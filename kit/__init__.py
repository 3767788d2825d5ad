"""kit: a Kaggle kit for Facial Keypoints Detection."""
from kit.training import runtime
from kit.training.allocator import keep_freed_memory

# Before anything imports JAX: its CPU threads take their malloc arenas when they start, and
# its backends read the device flags once.
keep_freed_memory()
runtime.configure()
