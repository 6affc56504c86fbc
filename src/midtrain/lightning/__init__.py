"""Lightning glue: the training module and callbacks (throughput, probe, preemption)."""
