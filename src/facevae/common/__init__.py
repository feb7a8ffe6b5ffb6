"""Small helpers every layer shares: errors, atomic file writes, image grids. Imports nothing of facevae."""
