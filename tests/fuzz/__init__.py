"""Fuzz targets run by the suite for a bounded number of iterations."""
