"""kit: a Kaggle kit for Facial Keypoints Detection."""
from kit.allocator import keep_freed_memory

# Before anything imports JAX: its CPU threads take their malloc arenas when they start.
keep_freed_memory()
