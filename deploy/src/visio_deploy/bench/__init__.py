"""`visio-rdv bench`: the system's throughput, cost, latency, backlog drain and scale-out on the
real local stack, beside the broker's own limit measured in the same run."""
