"""`python -m pipelines.benchmark`: the input pipeline benchmark under the name DESIGN.md
gives it; the benchmark itself is `pipelines.benchmarks.input_pipeline` (same flags)."""

from absl import flags

from pipelines.benchmarks import input_pipeline

# --help lists the benchmark's flags, as if they were defined here.
flags.adopt_module_key_flags(input_pipeline)

if __name__ == "__main__":
    input_pipeline.run()
