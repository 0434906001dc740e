"""simsoft: class-similarity-aware losses for JAX (Negi, Chan and Mahoor, arXiv 1812.09744).

Importing simsoft never imports TensorFlow; only `simsoft.data` does.
"""

__version__ = "0.1.0"
