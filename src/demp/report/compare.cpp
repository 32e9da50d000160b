#include "demp/report/compare.h"

#include <fmt/format.h>

#include "demp/common/error.h"
#include "demp/train/run_dir.h"

namespace demp::report {

std::vector<CompareRow> read_summaries(const std::vector<std::string>& dirs) {
  std::vector<CompareRow> rows;
  for (const auto& d : dirs) {
    train::Summary s = train::load_summary(d);
    const std::string status = s.status.empty() ? "?" : s.status;
    if (status == "diverged") {
      // --resume would replay the same steps from the last checkpoint into the same divergence.
      throw Error("the run in " + d + " diverged at step " +
                      (s.diverged_at_step ? std::to_string(*s.diverged_at_step) : "null"),
                  "run it again with a lower --lr: demp train ... --overwrite --out " + d);
    }
    if (status != "finished") {
      throw Error("the run in " + d + " has not finished (status " + status + ")",
                  "resume it with demp train --out " + d + " --resume");
    }
    rows.push_back({d, std::move(s)});
  }
  return rows;
}

std::string compare_table(const std::vector<CompareRow>& rows, const std::string& baseline) {
  if (rows.empty()) return "";
  const CompareRow* base = &rows[0];
  for (const auto& r : rows) {
    if (!baseline.empty() ? r.run == baseline : r.summary.method == "dense") {
      base = &r;
      break;
    }
  }
  const double base_s = base->summary.train_seconds.value_or(0.0);
  const double base_acc = base->summary.test_accuracy.value_or(0.0);
  auto pct = [](const train::Summary& s, const char* q) { return 100.0 * s.fraction_left(q).value_or(0.0); };
  std::string out = fmt::format("{:<28} {:<8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8}\n", "run", "method",
                                "test acc", "Δ acc", "units %", "params %", "FLOPs %", "train s", "speed-up");
  for (const auto& r : rows) {
    const auto& s = r.summary;
    std::string name = r.run;
    if (name.size() > 28) name = "…" + name.substr(name.size() - 27);
    const double secs = s.train_seconds.value_or(0.0);
    const double acc = s.test_accuracy.value_or(0.0);
    out += fmt::format("{:<28} {:<8} {:>8.2f}% {:>+7.2f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>7.2f}x{}\n",
                       name, s.method.empty() ? "?" : s.method, 100 * acc, 100 * (acc - base_acc),
                       pct(s, "units"), pct(s, "params"), pct(s, "flops"), secs,
                       secs > 0 ? base_s / secs : 0.0, s.warning ? "  (collapsed)" : "");
  }
  out += fmt::format("speed-up and Δ acc are against {}\n", base->run);
  return out;
}

}  // namespace demp::report
