"""UTAD: two-stage IE-Net / Expert-Net with perceptual measurement (networks so far; see issue 5)."""
