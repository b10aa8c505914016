"""Gradient dot products: influence with no curvature (H = I), the cheapest gradient method."""

from influence.methods.base import Method

METHOD = Method("identity", "gradient dot product q·g (no curvature)", from_gradients=lambda g: g.identity)
