#pragma once
// SIGINT/SIGTERM during the loop: the step in flight finishes, then the run writes a checkpoint
// and a summary (status "interrupted") and says how to resume. A repeat within a second is the
// same interrupt delivered twice (a terminal's Ctrl-C reaches every rank, and the launcher
// forwards it); a repeat after that aborts at once. LibTorch-free.
#include <signal.h>

namespace demp::train {

/// Installs the handler while it lives (and restores the previous ones after).
class InterruptGuard {
 public:
  /// `say`: print one line when the first interrupt arrives.
  explicit InterruptGuard(bool say);
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

/// True once an interrupt arrived under the current guard.
bool interrupt_requested();

}  // namespace demp::train
