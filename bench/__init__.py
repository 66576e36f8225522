"""Benchmarks, run from the repository root as modules (JSON out, tables for docs/):

    python -m bench.run        throughput, FLOPs, loss-wrapper overhead, input pipeline, memory
    python -m bench.tune       interleaved A/B of process settings; head-to-head against smp
    python -m bench.profile_step   where one training step's time goes (TF profiler, oneDNN)
    python -m bench.export     exported artifacts' latency and size
    python -m bench.tiled      tiled inference throughput and memory
    python -m bench.segformer_bench   SegFormer against smp/transformers
    python -m bench.quality    validation Dice on real datasets within a time budget

Shared pieces: `bench.common` (settings, machine facts, timing, the training step) and
`bench.report` (markdown tables, doc sections between markers). See docs/benchmarks.md.
"""
