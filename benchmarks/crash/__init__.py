"""The crash matrix's parts (benchmarks/crash_matrix.py runs them).

- `conditions`: what the run makes hard — faults, list lag, slow calls, the engine's config;
- `crew`: the processes — `llmbatch worker`s, the emulator — and how they are struck;
- `windows`: where in the protocol each strike landed;
- `calllog`: the audit, from the store and the emulator's call log (so the engine may delete
  its files), and the accounting of every double create against what caused it;
- `stages`: what cannot be struck directly — a full disk, PID namespaces.
"""
