"""Studies over several runs: the built-in demo, the method bake-off, sweeps, the advisor and the report."""
