"""Kaggle itself, and the only place the `kaggle` client is imported: the credentials it
would send, found and kept out of every message (credentials), the data and submission calls
with their retries and one-line errors (client, the one importer of `kaggle`), the kernel
calls a remote run makes (kernel_api), where a Kaggle notebook keeps the competition,
scratch space and outputs (places), and the installer a kernel or notebook runs before the
kit can import (kernel_setup, a standalone script).
"""
