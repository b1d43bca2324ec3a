"""Bounds: IBP, the linear backward pass (CROWN), alpha- and beta-optimised relaxations, and
the intermediate bounds they rest on, behind one interface (``methods.row_lower_bounds``)."""
