"""Pure renderings of a run's folded events: the trailer, explain, status."""
