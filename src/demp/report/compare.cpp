#include "demp/report/compare.h"

#include <fmt/format.h>

#include "demp/common/error.h"
#include "demp/common/files.h"

namespace demp::report {

std::vector<CompareRow> read_summaries(const std::vector<std::string>& dirs) {
  std::vector<CompareRow> rows;
  for (const auto& d : dirs) {
    const std::string path = d + "/summary.json";
    if (!file_exists(path)) {
      throw Error("no summary.json in " + d, "give the directories of finished runs");
    }
    nlohmann::json j = nlohmann::json::parse(read_file(path), nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      throw Error(path + " is not valid JSON", "the file is damaged; the run writes it when it ends");
    }
    const std::string status =
        j.contains("status") && j["status"].is_string() ? j["status"].get<std::string>() : "?";
    if (status == "diverged") {
      // --resume would replay the same steps from the last checkpoint into the same divergence.
      throw Error(
          "the run in " + d + " diverged at step " + j.value("diverged_at_step", nlohmann::json()).dump(),
          "run it again with a lower --lr: demp train ... --overwrite --out " + d);
    }
    if (status != "finished") {
      throw Error("the run in " + d + " has not finished (status " + status + ")",
                  "resume it with demp train --out " + d + " --resume");
    }
    rows.push_back({d, j});
  }
  return rows;
}

std::string compare_table(const std::vector<CompareRow>& rows, const std::string& baseline) {
  if (rows.empty()) return "";
  const CompareRow* base = &rows[0];
  for (const auto& r : rows) {
    if (!baseline.empty() ? r.run == baseline : r.summary.value("method", "") == "dense") {
      base = &r;
      break;
    }
  }
  const double base_s = base->summary.value("train_seconds", 0.0);
  const double base_acc = base->summary.value("test_accuracy", 0.0);
  auto pct = [](const nlohmann::json& s, const char* a, const char* b) {
    const double d = s.value(b, 0.0);
    return d > 0 ? 100.0 * s.value(a, 0.0) / d : 0.0;
  };
  std::string out = fmt::format("{:<28} {:<8} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8}\n", "run", "method",
                                "test acc", "Δ acc", "units %", "params %", "FLOPs %", "train s", "speed-up");
  for (const auto& r : rows) {
    const auto& s = r.summary;
    std::string name = r.run;
    if (name.size() > 28) name = "…" + name.substr(name.size() - 27);
    const double secs = s.value("train_seconds", 0.0);
    const double acc = s.value("test_accuracy", 0.0);
    out += fmt::format("{:<28} {:<8} {:>8.2f}% {:>+7.2f} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>7.2f}x{}\n",
                       name, s.value("method", "?"), 100 * acc, 100 * (acc - base_acc),
                       pct(s, "units_final", "units_initial"), pct(s, "params_final", "params_initial"),
                       pct(s, "flops_final", "flops_initial"), secs, secs > 0 ? base_s / secs : 0.0,
                       s.contains("warning") ? "  (collapsed)" : "");
  }
  out += fmt::format("speed-up and Δ acc are against {}\n", base->run);
  return out;
}

}  // namespace demp::report
