"""Figures and reports: labelled image grids (``facevae.reporting.grids``)."""
