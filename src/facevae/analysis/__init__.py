"""Looking inside a trained run: reconstructions, samples, traversals, dimensions, editing."""
