"""Default configs and the demo batch, shipped so an installed bananaflow works anywhere."""
