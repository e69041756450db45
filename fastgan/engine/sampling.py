"""Moved to fastgan.variants.sampling (issue 19); kept until the engine imports it there."""
from fastgan.variants.sampling import fixed_noise, generate  # noqa: F401
