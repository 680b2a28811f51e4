"""asd_core: anomalous machine-sound detection by masked-spectrogram reconstruction.

The library runs on one machine without Ray; the Ray jobs in ``jobs/`` call it.
"""

__version__ = "0.1.0"
