"""Lightning glue: the training module, the trainer factory (`trainer`), model layout on devices
(`parallelize`), and callbacks (throughput, probe, preemption)."""
