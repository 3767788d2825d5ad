"""Kaggle itself, and the only place the `kaggle` client is imported: credentials found and
redacted (credentials), data and submission calls with their retries and one-line errors
(client), kernel calls and the GPU quota (kernel_api), where a Kaggle notebook keeps the
competition, scratch space and outputs (places), and the installer a kernel or notebook runs
before the kit can import (kernel_setup, a standalone script).
"""
