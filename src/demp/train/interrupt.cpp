#include "demp/train/interrupt.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>

namespace demp::train {

namespace {

volatile std::sig_atomic_t g_interrupt = 0;
std::atomic<long long> g_interrupt_ms{0};
bool g_interrupt_say = true;
bool g_interrupt_tty = false;
static_assert(std::atomic<long long>::is_always_lock_free, "used in a signal handler");

long long monotonic_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

extern "C" void on_interrupt(int sig) {
  const int saved_errno = errno;
  const long long now = monotonic_ms();
  if (g_interrupt == 0) {
    g_interrupt = sig;
    g_interrupt_ms = now;
    if (g_interrupt_say) {
      // On a terminal, clear a progress bar's line first (the bar redraws below the message).
      static const char clear[] = "\r\x1b[K";
      static const char msg[] =
          "demp: interrupted: finishing this step, then writing a checkpoint and summary.json "
          "(interrupt again to abort at once)\n";
      if ((g_interrupt_tty && ::write(2, clear, sizeof(clear) - 1) < 0) ||
          ::write(2, msg, sizeof(msg) - 1) < 0) {
      }
    }
  } else if (now - g_interrupt_ms.load() >= 1000) {
    ::signal(sig, SIG_DFL);
    ::raise(sig);
  }
  errno = saved_errno;
}

}  // namespace

InterruptGuard::InterruptGuard(bool say) {
  g_interrupt = 0;
  g_interrupt_say = say;
  g_interrupt_tty = ::isatty(2) != 0;
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, &old_int_);
  ::sigaction(SIGTERM, &sa, &old_term_);
}

InterruptGuard::~InterruptGuard() {
  ::sigaction(SIGINT, &old_int_, nullptr);
  ::sigaction(SIGTERM, &old_term_, nullptr);
}

bool interrupt_requested() { return g_interrupt != 0; }

}  // namespace demp::train
