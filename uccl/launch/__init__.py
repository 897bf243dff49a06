"""The launcher uccl-run (torchrun with uccl's options, and --fabric); the emulated fabric is uccl.fabric."""
