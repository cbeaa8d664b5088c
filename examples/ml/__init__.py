"""ML example: numpy, scikit-learn and Pillow handlers (needs the ``ml`` extra; see README.md)."""
