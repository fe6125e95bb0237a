"""lbnet_deploy.benchmarks: the product's bench (`lbnet-deploy bench`, `benchmarks.report` for
RESULTS.md): timing loop over any runner, statistics, memory, machine facts, MACs and roofline,
the interleaved comparison. Research scripts are in benchmarks/studies/ (not installed)."""

__all__ = ["bench", "cli", "machine", "markdown", "measure", "models", "report"]
