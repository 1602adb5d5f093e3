"""Benchmarks: commands that print figures, never tests. One module per thing measured:

    python -m alexnet_tf.benchmarks.training_step        # s/step, FLOP/s vs a matmul
    python -m alexnet_tf.benchmarks.training_throughput  # images/s, synthetic vs real shards
    python -m alexnet_tf.benchmarks.serving_latency      # export latency vs the Keras model

WORKSPACE.md records what they printed on this project's machines.
"""
