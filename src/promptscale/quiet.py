"""Known library notices that say nothing about a promptscale run, silenced one by one at their source.

A plain run prints our own lines, the progress bar and real problems only. Each entry names one message
and why it is noise here; nothing else is filtered (never all warnings of a category). A notice that
stops being noise (a library change makes it real) is removed from this list, not widened.
"""

from __future__ import annotations

import warnings

# (message regex, why it is noise for us)
KNOWN_NOTICES: tuple[tuple[str, str], ...] = (
    # Lightning sees `srun` on PATH (a SLURM client is installed) and suggests running under it; a job that
    # SLURM really launched runs under srun/sbatch and does not get this notice.
    (r"The `srun` command is available on your system but is not used", "SLURM client installed, not a SLURM job"),
    # Lightning 2.6's pytree helper calls a torch API that torch 2.13 deprecates; nothing we call.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning internals on torch 2.13"),
    # A short run (fewer batches than log_every_n_steps) logs its loss at the end; not a problem.
    (r"The number of training batches \(\d+\) is smaller than the logging interval", "short runs log at the end"),
    # Our train loader resumes mid-epoch itself (SeededSampler), which Lightning cannot see.
    (r"You're resuming from a checkpoint that ended before the epoch ended", "we resume mid-epoch exactly"),
)


def silence_known_notices() -> None:
    """Install the filters (idempotent: warnings.filterwarnings dedupes identical filters)."""
    for message, _why in KNOWN_NOTICES:
        warnings.filterwarnings("ignore", message=message)
