"""Search: branch-and-bound over activation or input splits, branching points, and the
PGD attack that looks for counterexamples."""
