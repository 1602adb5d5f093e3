"""`python -m pipelines.benchmark`: the input pipeline benchmark under the name DESIGN.md
gives it; the benchmark itself is `pipelines.benchmarks.input_pipeline` (same flags)."""

from pipelines.benchmarks.input_pipeline import run

if __name__ == "__main__":
    run()
