"""Benchmarks of the data side: commands that print figures, never tests.

    python -m pipelines.benchmarks.input_pipeline   # training input images/s vs bare decoding
    python -m pipelines.benchmarks.conversion       # conversion images/s vs bare decode+encode

(`python -m pipelines.benchmark` runs the input pipeline one, the name DESIGN.md gives.)
"""
