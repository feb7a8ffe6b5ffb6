"""Figures and reports: labelled image grids (``facevae.common.grids``)."""
