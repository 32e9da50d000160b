#include "demp/report/frontier.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/common/process.h"
#include "demp/report/sweep.h"
#include "demp/train/config.h"
#include "demp/train/run_dir.h"

namespace demp::report {

using nlohmann::json;
using nlohmann::ordered_json;

const std::vector<FrontierSeries>& frontier_catalogue() {
  static const std::vector<FrontierSeries> c = {
      {"dense", "dense", {"--method", "dense"}, false, "the reference: no pruning"},
      {"demp",
       "DemP (ours)",
       {"--method", "demp"},
       true,
       "DemP as demp runs it by default: proximal L1 step on γ, constant units shrunk to death, "
       "λ(t) driven to the size by --target-by of the run"},
      {"demp-paper",
       "DemP (paper form)",
       {"--method", "demp", "--l1-step", "loss", "--constant-units", "keep"},
       true,
       "the paper's DemP (λΣ|γ| in the loss, constant units kept), with our size controller on λ"},
      {"demp-flops",
       "DemP, FLOPs-weighted L1 (ours)",
       {"--method", "demp", "--l1-cost", "flops"},
       true,
       "DemP (ours) with the L1 on each γ weighted by the FLOPs its unit costs (after MorphNet): "
       "at equal parameters FLOP-heavy early units go first, to cut the FLOPs of training"},
      {"gradual",
       "gradual (BN scale)",
       {"--method", "gradual"},
       true,
       "gradual global BN-scale pruning during training on Zhu & Gupta's cubic schedule, "
       "reaching the size by --target-by of the run (what pruning-library users run)"},
      {"slimming",
       "Network Slimming",
       {"--method", "slimming", "--lambda", "1e-4"},
       true,
       "L1 on γ at Liu et al.'s λ = 1e-4, one global |γ| cut at half of the run, fine-tuning"},
      {"snap", "SNAP", {"--method", "snap"}, true, "structured SNIP at initialisation"},
      {"crop",
       "CroP-it",
       {"--method", "crop"},
       true,
       "structured gradient-flow preservation at initialisation, iterative"},
      {"earlycrop",
       "EarlyCroP",
       {"--method", "earlycrop"},
       true,
       "CroP-it early in training, when the weights' distance from initialisation settles"},
      {"l1norm",
       "L1-norm filters",
       {"--method", "l1norm"},
       true,
       "Li et al.'s smallest-L1 filters, per layer, gradually to half of the run"},
      {"random",
       "random (init)",
       {"--method", "random"},
       true,
       "random per-layer pruning at initialisation: the floor"},
  };
  return c;
}

namespace {

// Options the frontier sets on every run itself.
const std::vector<std::string> kSetByFrontier = {"out",          "resume",       "overwrite", "progress",
                                                 "stop-after",   "seed",         "method",    "target-params",
                                                 "target-flops", "target-units", "density"};

// A CI-sized frontier: short runs on a slice of the data (only where the options after "--" do
// not say otherwise).
const std::vector<std::pair<std::string, std::string>> kQuickArgs = {
    {"steps", "40"},      {"train-limit", "2048"}, {"test-limit", "500"},     {"check-size", "256"},
    {"prune-after", "5"}, {"log-every", "10"},     {"eval-batch-size", "500"}};

std::string flag_name(const std::string& a) {
  if (a.rfind("--", 0) != 0 || a.size() == 2) return {};
  const size_t eq = a.find('=');
  return a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
}

bool has_flag(const std::vector<std::string>& args, const std::string& name) {
  return std::any_of(args.begin(), args.end(), [&](const std::string& a) { return flag_name(a) == name; });
}

std::string level_text(double level) { return fmt::format("{:g}", level); }

std::string status_of(const std::string& dir) {
  const auto s = train::read_summary(dir);
  return s && !s->status.empty() ? s->status : std::string("pending");
}

int default_threads(int jobs) {
  const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  return std::max<int>(1, static_cast<int>(std::max<long>(1, cores)) / std::max(1, jobs));
}

struct Stat {
  int n = 0;
  double sum = 0, sum2 = 0;
  void add(double x) {
    ++n;
    sum += x;
    sum2 += x * x;
  }
  json mean() const { return n ? json(sum / n) : json(nullptr); }
  json std() const {
    if (n < 2) return n ? json(0.0) : json(nullptr);
    const double m = sum / n;
    return std::sqrt(std::max(0.0, (sum2 - n * m * m) / (n - 1)));
  }
};

}  // namespace

std::vector<FrontierRun> plan_frontier(const FrontierOptions& o) {
  if (o.out.empty()) throw Error("demp frontier needs --out DIR", "give the frontier directory");
  const std::string m = o.measure;
  if (m != "params" && m != "flops" && m != "units") {
    throw Error("unknown --measure '" + m + "'", "use params, flops or units");
  }
  std::vector<double> levels = o.levels;
  if (levels.empty()) levels = o.quick ? std::vector<double>{0.25} : std::vector<double>{0.25, 0.1, 0.05};
  std::set<std::string> seen_levels;
  for (double l : levels) {
    if (!(l > 0 && l < 1)) {
      throw Error(fmt::format("--levels: {} is not a fraction in (0, 1)", l),
                  "give the fractions kept, e.g. --levels 0.25,0.1,0.05");
    }
    if (!seen_levels.insert(level_text(l)).second) {
      throw Error(fmt::format("--levels repeats {}", l), "give each level once");
    }
  }
  const int seeds = o.seeds > 0 ? o.seeds : (o.quick ? 1 : 3);
  if (o.seeds < 0 || o.first_seed < 0) throw Error("--seeds and --first-seed must be >= 0");
  if (o.jobs < 1) throw Error("--jobs must be >= 1", "the number of runs side by side, e.g. 2");

  const auto& cat = frontier_catalogue();
  std::vector<const FrontierSeries*> series;
  if (o.methods.empty()) {
    for (const auto& s : cat) series.push_back(&s);
  } else {
    std::string known;
    for (const auto& s : cat) known += (known.empty() ? "" : ", ") + s.key;
    for (const auto& k : o.methods) {
      auto it = std::find_if(cat.begin(), cat.end(), [&](const FrontierSeries& s) { return s.key == k; });
      if (it == cat.end()) throw Error("--methods: unknown method '" + k + "'", "use some of: " + known);
      if (std::find(series.begin(), series.end(), &*it) != series.end()) {
        throw Error("--methods names '" + k + "' twice", "give each method once");
      }
      series.push_back(&*it);
    }
    // catalogue order, so that tables read the same whatever order --methods gave
    std::sort(series.begin(), series.end());
  }

  check_base_args(o.base_args, {});
  for (const auto& a : o.base_args) {
    const std::string f = flag_name(a);
    if (f.empty()) continue;  // a value, or "--"
    if (std::find(kSetByFrontier.begin(), kSetByFrontier.end(), f) != kSetByFrontier.end()) {
      throw Error("the frontier sets --" + f + " on every run itself", "leave it out after '--'");
    }
    for (const auto* s : series) {
      if (has_flag(s->args, f)) {
        throw Error(
            "--" + f + " after '--' would change the '" + s->key + "' series (" + shell_join(s->args) + ")",
            "leave it out, or leave '" + s->key + "' out of --methods");
      }
    }
  }

  std::vector<std::string> common = o.base_args;
  if (o.quick) {
    for (const auto& [k, v] : kQuickArgs) {
      if (!has_flag(o.base_args, k)) common.insert(common.end(), {"--" + k, v});
    }
  }
  if (o.jobs > 1 && !has_flag(o.base_args, "threads")) {
    common.insert(common.end(), {"--threads", std::to_string(default_threads(o.jobs))});
  }

  std::vector<FrontierRun> runs;
  const char tag = m[0];  // p, f, u
  for (int k = 0; k < seeds; ++k) {
    const int seed = o.first_seed + k;
    for (const auto* s : series) {
      const std::vector<double> at = s->sized ? levels : std::vector<double>{0.0};
      for (double level : at) {
        FrontierRun r;
        r.series = s->key;
        r.label = s->label;
        r.method = s->args.size() > 1 ? s->args[1] : s->key;
        r.level = level;
        r.seed = seed;
        r.name = s->sized ? fmt::format("{}-{}{}-s{}", s->key, tag, level_text(level), seed)
                          : fmt::format("{}-s{}", s->key, seed);
        r.dir = o.out + "/" + r.name;
        r.argv = {o.exe, "train"};
        r.argv.insert(r.argv.end(), common.begin(), common.end());
        r.argv.insert(r.argv.end(), s->args.begin(), s->args.end());
        if (s->sized) r.argv.insert(r.argv.end(), {"--target-" + m, level_text(level)});
        r.argv.insert(r.argv.end(), {"--seed", std::to_string(seed), "--out", r.dir, "--progress", "plain"});
        runs.push_back(std::move(r));
      }
    }
  }
  return runs;
}

std::vector<ordered_json> frontier_rows(const std::vector<FrontierRun>& runs, const std::string& measure) {
  struct Agg {
    std::string series, label;
    double level = 0;
    int runs = 0;
    Stat acc, params, flops, units, secs, reached;
  };
  std::vector<Agg> aggs;
  auto find = [&](const FrontierRun& r) -> Agg& {
    for (auto& a : aggs) {
      if (a.series == r.series && a.level == r.level) return a;
    }
    aggs.push_back({r.series, r.label, r.level, 0, {}, {}, {}, {}, {}, {}});
    return aggs.back();
  };
  for (const auto& r : runs) {
    auto& a = find(r);
    ++a.runs;
    const auto s = train::read_summary(r.dir);
    if (!s || !s->is_finished()) continue;
    a.acc.add(s->test_accuracy.value_or(0.0));
    for (auto [stat, q] :
         {std::pair<Stat*, const char*>{&a.params, "params"}, {&a.flops, "flops"}, {&a.units, "units"}}) {
      if (const auto f = s->fraction_left(q)) stat->add(*f);
    }
    a.secs.add(s->train_seconds.value_or(0.0));
    const json c =
        s->method_state.is_object() ? s->method_state.value("controller", json::object()) : json::object();
    const int64_t steps = s->steps.value_or(0);
    if (c.contains("reached_step") && c["reached_step"].is_number() && steps > 0) {
      a.reached.add(c["reached_step"].get<double>() / static_cast<double>(steps));
    }
  }
  // Catalogue order, then levels from the largest down.
  const auto& cat = frontier_catalogue();
  auto rank = [&](const std::string& k) {
    return std::find_if(cat.begin(), cat.end(), [&](const FrontierSeries& s) { return s.key == k; }) -
           cat.begin();
  };
  std::stable_sort(aggs.begin(), aggs.end(), [&](const Agg& x, const Agg& y) {
    if (rank(x.series) != rank(y.series)) return rank(x.series) < rank(y.series);
    return x.level > y.level;
  });
  json dense_secs = nullptr, dense_acc = nullptr;
  for (const auto& a : aggs) {
    if (a.series == "dense") {
      dense_secs = a.secs.mean();
      dense_acc = a.acc.mean();
    }
  }
  // A row is at its level when its mean size is within 2 points of it (the tolerance DemP's
  // controller is held to) or under it; only such rows can be best at that level.
  auto size_of = [&](const Agg& a) -> const Stat& {
    return measure == "flops" ? a.flops : measure == "units" ? a.units : a.params;
  };
  auto at_level = [&](const Agg& a) {
    const Stat& s = size_of(a);
    return a.level > 0 && s.n > 0 && s.sum / s.n <= a.level + 0.02;
  };
  std::map<double, std::pair<double, size_t>> best;  // level -> (accuracy, row)
  for (size_t i = 0; i < aggs.size(); ++i) {
    const auto& a = aggs[i];
    if (a.level <= 0 || a.acc.n == 0 || !at_level(a)) continue;
    const double m = a.acc.sum / a.acc.n;
    if (!best.count(a.level) || m > best[a.level].first) best[a.level] = {m, i};
  }
  std::vector<ordered_json> rows;
  for (size_t i = 0; i < aggs.size(); ++i) {
    const auto& a = aggs[i];
    ordered_json r;
    r["series"] = a.series;
    r["method"] = a.label;
    r["level"] = a.level > 0 ? json(a.level) : json(nullptr);
    r["seeds_finished"] = a.acc.n;
    r["runs"] = a.runs;
    r["test_accuracy_mean"] = a.acc.mean();
    r["test_accuracy_std"] = a.acc.std();
    r["delta_vs_dense"] = a.acc.n && dense_acc.is_number()
                              ? json(a.acc.sum / a.acc.n - dense_acc.get<double>())
                              : json(nullptr);
    r["params_fraction"] = a.params.mean();
    r["flops_fraction"] = a.flops.mean();
    r["units_fraction"] = a.units.mean();
    r["train_seconds"] = a.secs.mean();
    r["speedup_vs_dense"] = a.secs.n && dense_secs.is_number() && a.secs.sum > 0
                                ? json(dense_secs.get<double>() / (a.secs.sum / a.secs.n))
                                : json(nullptr);
    r["target_reached_at"] = a.reached.mean();  // fraction of the run (DemP's controller)
    r["at_level"] = a.level > 0 ? json(at_level(a)) : json(nullptr);
    r["best"] = a.level > 0 && best.count(a.level) && best[a.level].second == i;
    rows.push_back(std::move(r));
  }
  return rows;
}

std::string frontier_text(const std::vector<ordered_json>& rows, bool markdown) {
  auto pct = [](const json& x) {
    return x.is_number() ? fmt::format("{:.2f}", 100 * x.get<double>()) : std::string("-");
  };
  std::vector<std::vector<std::string>> cells = {{"method", "level", "seeds", "test acc %", "Δ dense",
                                                  "params %", "FLOPs %", "units %", "train s", "speed-up",
                                                  "best"}};
  for (const auto& r : rows) {
    const bool any = r["seeds_finished"].get<int>() > 0;
    std::string acc = "-";
    if (any) {
      acc = fmt::format("{:.2f} ± {:.2f}", 100 * r["test_accuracy_mean"].get<double>(),
                        100 * r["test_accuracy_std"].get<double>());
    }
    cells.push_back(
        {r["method"].get<std::string>(),
         r["level"].is_number() ? fmt::format("{:g}%", 100 * r["level"].get<double>()) : "-",
         fmt::format("{}/{}", r["seeds_finished"].get<int>(), r["runs"].get<int>()), acc,
         r["delta_vs_dense"].is_number() ? fmt::format("{:+.2f}", 100 * r["delta_vs_dense"].get<double>())
                                         : "-",
         pct(r["params_fraction"]), pct(r["flops_fraction"]), pct(r["units_fraction"]),
         r["train_seconds"].is_number() ? fmt::format("{:.1f}", r["train_seconds"].get<double>()) : "-",
         r["speedup_vs_dense"].is_number() ? fmt::format("{:.2f}x", r["speedup_vs_dense"].get<double>())
                                           : "-",
         r["best"].get<bool>()                                             ? "best"
         : r["at_level"].is_boolean() && !r["at_level"].get<bool>() && any ? "missed"
                                                                           : ""});
  }
  auto width = [](const std::string& s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
  };
  std::string out;
  if (markdown) {
    for (size_t i = 0; i < cells.size(); ++i) {
      out += "|";
      for (size_t j = 0; j < cells[i].size(); ++j) {
        const bool bold = cells[i].back() == "best" && i > 0 && (j == 0 || j == 3);
        out += " " + (bold ? "**" + cells[i][j] + "**" : cells[i][j]) + " |";
      }
      out += "\n";
      if (i == 0) {
        out += "|";
        for (size_t j = 0; j < cells[0].size(); ++j) out += j < 1 ? "---|" : "---:|";
        out += "\n";
      }
    }
    return out;
  }
  std::vector<size_t> w(cells[0].size(), 0);
  for (const auto& r : cells) {
    for (size_t j = 0; j < r.size(); ++j) w[j] = std::max(w[j], width(r[j]));
  }
  for (const auto& r : cells) {
    for (size_t j = 0; j < r.size(); ++j) {
      const std::string pad(w[j] - width(r[j]), ' ');
      out += j == 0 ? r[j] + pad : "  " + pad + r[j];
    }
    out += "\n";
  }
  return out;
}

namespace {

// The train options that set what is trained: `args` without those that only change how a run is
// run (the ones --resume may change: --checkpoint-every, --threads, ...), so that a frontier can
// be continued with them added, dropped or changed.
std::vector<std::string> settings_args(const std::vector<std::string>& args) {
  const auto& changeable = train::resume_changeable();
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool option = a.rfind("--", 0) == 0;
    const auto eq = a.find('=');
    const std::string name = option ? a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2) : "";
    if (!option || std::find(changeable.begin(), changeable.end(), name) == changeable.end()) {
      out.push_back(a);
      continue;
    }
    if (eq == std::string::npos && i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) ++i;  // its value
  }
  return out;
}

void write_frontier_tables(const FrontierOptions& o, const std::vector<FrontierRun>& runs) {
  const auto rows = frontier_rows(runs, o.measure);
  std::vector<std::string> cols;
  if (!rows.empty()) {
    for (const auto& [k, v] : rows.front().items()) cols.push_back(k);
  }
  ordered_json j;
  j["columns"] = cols;
  j["rows"] = rows;
  write_file_atomic(o.out + "/table.json", j.dump(2) + "\n");
  write_file_atomic(o.out + "/table.csv", table_csv(cols, rows));
  write_file_atomic(o.out + "/table.md", frontier_text(rows, true));
  // one row per run, as a sweep's table
  std::vector<std::string> rcols = {"run", "series", "level"};
  for (const auto& c : table_columns({})) {
    if (c != "run") rcols.push_back(c);
  }
  std::vector<ordered_json> per;
  for (const auto& r : runs) {
    ordered_json row;
    row["run"] = r.name;
    row["series"] = r.series;
    row["level"] = r.level > 0 ? json(r.level) : json(nullptr);
    const ordered_json t = table_row(r.name, r.dir, {}, {}, r.status == "failed" ? "failed" : "");
    for (const auto& [k, v] : t.items()) {
      if (k != "run") row[k] = v;
    }
    per.push_back(std::move(row));
  }
  write_file_atomic(o.out + "/runs.csv", table_csv(rcols, per));
}

ordered_json frontier_json(const FrontierOptions& o, const std::vector<FrontierRun>& runs,
                           const std::string& created) {
  ordered_json j;
  j["kind"] = "frontier";
  j["created"] = created;
  j["updated"] = train::utc_now();
  j["measure"] = o.measure;
  j["quick"] = o.quick;
  j["base_args"] = o.base_args;
  std::vector<double> levels;
  std::vector<int> seeds;
  for (const auto& r : runs) {
    if (r.level > 0 && std::find(levels.begin(), levels.end(), r.level) == levels.end())
      levels.push_back(r.level);
    if (std::find(seeds.begin(), seeds.end(), r.seed) == seeds.end()) seeds.push_back(r.seed);
  }
  j["levels"] = levels;
  j["seeds"] = seeds;
  j["runs"] = ordered_json::array();
  for (const auto& r : runs) {
    j["runs"].push_back({{"name", r.name},
                         {"series", r.label},
                         {"key", r.series},
                         {"method", r.method},
                         {"level", r.level > 0 ? json(r.level) : json(nullptr)},
                         {"seed", r.seed},
                         {"command", display_command(r.argv)}});
  }
  return j;
}

}  // namespace

int run_frontier(const FrontierOptions& o) {
  auto runs = plan_frontier(o);
  const size_t n = runs.size();
  if (o.dry_run) {
    for (size_t i = 0; i < n; ++i) {
      std::printf("[%zu/%zu] %s: %s\n", i + 1, n, runs[i].name.c_str(),
                  display_command(runs[i].argv).c_str());
    }
    return 0;
  }
  make_directories(o.out);
  const std::string path = o.out + "/frontier.json";
  std::string created = train::utc_now();
  const json old = read_json_or_null(path);
  if (old.is_object()) {
    // Runs are named by series, level and seed only: a run finished under other train options
    // would be skipped as if it matched. Refuse rather than mix two settings in one table.
    const json old_args = old.value("base_args", json::array());
    if (settings_args(old_args.get<std::vector<std::string>>()) != settings_args(o.base_args) ||
        old.value("measure", std::string()) != o.measure ||
        old.value("quick", false) != o.quick) {
      throw Error(fmt::format("{} holds a frontier started with other settings ({}{}{}), not ({}{}{})", o.out,
                              shell_join(old_args.get<std::vector<std::string>>()),
                              old.value("quick", false) ? " --quick" : "",
                              " --measure " + old.value("measure", std::string("?")), shell_join(o.base_args),
                              o.quick ? " --quick" : "", " --measure " + o.measure),
                  "give the same options to continue it (more seeds, levels or methods may be added, and "
                  "the options --resume may change, such as --checkpoint-every), or another --out");
    }
    created = old.value("created", created);
  } else if (is_regular_file(path)) {
    throw Error(path + " is not valid JSON", "remove it or use another --out");
  }
  write_file_atomic(path, frontier_json(o, runs, created).dump(2) + "\n");

  size_t before = 0;
  for (auto& r : runs) {
    r.status = status_of(r.dir);
    if (r.status == "finished") ++before;
  }
  std::fprintf(stderr, "frontier: %zu runs in %s (%zu finished before), %d at a time\n", n, o.out.c_str(),
               before, o.jobs);
  std::mutex mu;
  std::atomic<size_t> next{0};
  size_t done = before;
  int failed = 0;
  const auto t_start = std::chrono::steady_clock::now();
  ForwardSignals forward;  // a SIGINT or SIGTERM stops the running runs cleanly, and the frontier
  auto work = [&] {
    for (;;) {
      if (ForwardSignals::received() != 0) return;
      const size_t i = next++;
      if (i >= n) return;
      auto& r = runs[i];
      const std::string tag = fmt::format("[{}/{}] {}", i + 1, n, r.name);
      if (r.status == "finished" || r.status == "diverged") {
        std::lock_guard<std::mutex> lk(mu);
        r.skipped = true;
        if (r.status == "diverged") ++failed;
        std::fprintf(stderr, "%s: skipped (%s before%s)\n", tag.c_str(), r.status.c_str(),
                     r.status == "diverged" ? fmt::format("; delete {} to run it again", r.dir).c_str() : "");
        continue;
      }
      auto argv = r.argv;
      std::string flag;
      const std::string verb = continuation(r.dir, &flag);
      if (!flag.empty()) argv.push_back(flag);
      make_directories(r.dir);
      const std::string log = train::RunFiles::in(r.dir, train::RunFiles::output_log);
      {
        std::lock_guard<std::mutex> lk(mu);
        append_line(log, "=== " + train::utc_now() + " | " + display_command(argv));
        std::fprintf(stderr, "%s: %s\n", tag.c_str(), verb.c_str());
        std::fflush(stderr);
      }
      const auto t0 = std::chrono::steady_clock::now();
      const auto res = run_process(argv, [&](const std::string& line) {
        append_line(log, line);
        if (o.verbose) {
          std::lock_guard<std::mutex> lk(mu);
          std::fprintf(stderr, "  %s | %s\n", r.name.c_str(), line.c_str());
        }
      });
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::lock_guard<std::mutex> lk(mu);
      const std::string st = status_of(r.dir);
      if (res.exit_code == 0 && st == "finished") {
        r.status = "finished";
        ++done;
        const auto s = train::read_summary(r.dir);
        const auto params = s ? s->fraction_left("params") : std::nullopt;
        const double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        std::fprintf(stderr,
                     "%s: finished in %.1f s | test acc %.2f%% | params %s%% | %zu/%zu done, %.0f s so far\n",
                     tag.c_str(), secs, 100 * (s ? s->test_accuracy.value_or(0.0) : 0.0),
                     params ? fmt::format("{:.1f}", 100 * *params).c_str() : "-", done, n, elapsed);
      } else if (ForwardSignals::received() != 0 && st == "interrupted") {
        r.status = "interrupted";
        std::fprintf(stderr, "%s: interrupted after %.1f s (its checkpoint is written)\n", tag.c_str(), secs);
      } else {
        r.status = st == "diverged" ? "diverged" : "failed";
        ++failed;
        std::fprintf(stderr, "%s: %s (exit %d) after %.1f s: %s (output: %s)\n", tag.c_str(),
                     r.status == "diverged" ? "DIVERGED" : "FAILED", res.exit_code, secs,
                     res.last_line.c_str(), log.c_str());
      }
      std::fflush(stderr);
      write_frontier_tables(o, runs);
    }
  };
  std::vector<std::thread> pool;
  for (int k = 0; k < std::min<int>(o.jobs, static_cast<int>(n)); ++k) pool.emplace_back(work);
  for (auto& t : pool) t.join();
  write_frontier_tables(o, runs);
  if (const int sig = ForwardSignals::received()) {
    std::fprintf(stderr,
                 "frontier: stopped by signal %d (%s) with %zu of %zu runs finished; run the same command "
                 "again to resume\n",
                 sig, strsignal(sig), done, n);
    return 130;
  }
  std::printf("%s", frontier_text(frontier_rows(runs, o.measure), false).c_str());
  std::printf("%zu runs: %zu finished, %d did not; tables: %s/table.md, table.csv, table.json, runs.csv\n", n,
              done, failed, o.out.c_str());
  if (o.jobs > 1) {
    std::printf(
        "note: %d runs shared the machine at a time; train s and speed-up compare runs under the same "
        "sharing, not against a run alone\n",
        o.jobs);
  }
  return failed > 0 ? 1 : 0;
}

}  // namespace demp::report
