// train/preemption.h — SLURM preemption and time limits (DESIGN.md §6): SIGUSR1 (sbatch --signal=USR1@120, or
// scancel --signal=USR1) and SIGTERM (scancel, preemption, the end of the time limit) ask the trainer to finish the
// current step, write a checkpoint and exit with kRequeueExitCode, which the batch script that `liger slurm` writes
// turns into a requeue; the requeued job continues with --resume auto.
#pragma once

namespace liger {

// sysexits' EX_TEMPFAIL: "a temporary failure; the user is invited to retry".
constexpr int kRequeueExitCode = 75;

// Installs the handlers (idempotent). A second SIGTERM while the checkpoint is being written is ignored; SIGKILL, which
// SLURM sends after its grace period, cannot be.
void install_stop_signals();
// The signal that asked to stop (SIGUSR1 or SIGTERM), 0 while none did.
int stop_signal();
// Clears the request (tests, and a trainer that has acted on it).
void clear_stop_signal();

}  // namespace liger
