"""Test session setup: 8 simulated CPU devices, so data-parallel code runs for real.

XLA reads the flag when jax is first imported, hence here, before any test module.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
