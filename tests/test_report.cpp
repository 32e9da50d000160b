// Sweeps, studies and reports: grid parsing and naming, the summary table, the dead-fraction
// curve, the study's expectation checker, the HTML helpers, and a sweep driven end to end with a
// stand-in for the demp binary (a shell script), so that skipping, resuming and failures are
// tested without training anything.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/common/process.h"
#include "demp/report/html.h"
#include "demp/report/plots.h"
#include "demp/report/study.h"
#include "demp/report/sweep.h"
#include "demp/train/run_dir.h"
#include "demp/train/summary.h"

using namespace demp::report;
using demp::find_executable;
using demp::run_process;
using demp::shell_join;
using nlohmann::json;

namespace {

struct ReportTemp {
  std::string path;
  ReportTemp() {
    char tmpl[] = "/tmp/demp-report-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~ReportTemp() { demp::remove_tree(path); }
};

void write(const std::string& path, const std::string& text) { demp::write_file_atomic(path, text); }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string l;
  while (std::getline(in, l)) out.push_back(l);
  return out;
}

json summary(double acc, int units0, int units1, const std::string& method = "demp") {
  return {{"status", "finished"},
          {"method", method},
          {"model", "mlp"},
          {"width", 0.25},
          {"dataset", "fashion-mnist"},
          {"seed", 0},
          {"steps", 20},
          {"test_accuracy", acc},
          {"best_test_accuracy", acc},
          {"units_initial", units0},
          {"units_final", units1},
          {"params_initial", 100},
          {"params_final", 50},
          {"flops_initial", 1000},
          {"flops_final", 250},
          {"train_seconds", 2.0},
          {"live_units_per_group", {{"fc1", units1}}}};
}

}  // namespace

// ---- grid and names -------------------------------------------------------------------------

TEST(ReportGrid, ParsesKeysAndValues) {
  auto a = parse_grid_axis("lambda=0.01,0.1, 1");
  EXPECT_EQ(a.key, "lambda");
  EXPECT_EQ(a.values, (std::vector<std::string>{"0.01", "0.1", "1"}));
  EXPECT_EQ(parse_grid_axis("--seed=0").key, "seed");
  // ';' separates when a value holds commas
  a = parse_grid_axis("mlp-widths=64,32;128,64");
  EXPECT_EQ(a.values, (std::vector<std::string>{"64,32", "128,64"}));
  for (const char* bad : {"lambda", "=1,2", "lambda=", "lambda=1,,2", "lambda=1,1"}) {
    EXPECT_THROW(parse_grid_axis(bad), demp::Error) << bad;
  }
}

TEST(ReportGrid, KeysMustBeTrainOptionsTheSweepDoesNotSet) {
  EXPECT_NO_THROW(check_grid_keys({{"lambda", {"1"}}, {"batch-size", {"32"}}, {"config", {"a"}}}));
  EXPECT_THROW(check_grid_keys({{"lamda", {"1"}}}), demp::Error);
  EXPECT_THROW(check_grid_keys({{"out", {"x"}}}), demp::Error);
  EXPECT_THROW(check_grid_keys({{"resume", {"x"}}}), demp::Error);
  EXPECT_THROW(check_grid_keys({{"seed", {"1"}}, {"seed", {"2"}}}), demp::Error);
}

TEST(ReportGrid, CartesianProductFirstAxisSlowest) {
  const std::vector<GridAxis> axes = {{"lambda", {"0.1", "0.2"}}, {"seed", {"0", "1", "2"}}};
  const auto p = expand_grid(axes);
  ASSERT_EQ(p.size(), 6u);
  EXPECT_EQ(p[0], (std::vector<std::string>{"0.1", "0"}));
  EXPECT_EQ(p[2], (std::vector<std::string>{"0.1", "2"}));
  EXPECT_EQ(p[3], (std::vector<std::string>{"0.2", "0"}));
  EXPECT_EQ(expand_grid({}).size(), 1u);  // no axis: one run with the base options
}

TEST(ReportGrid, RunNames) {
  const std::vector<GridAxis> axes = {{"lambda", {"0.01", "0.1"}}, {"seed", {"0", "1"}}};
  EXPECT_EQ(run_name(axes, {"0.01", "0"}), "lambda=0.01_seed=0");
  EXPECT_EQ(run_name(axes, {"0.01", "1"}, "l{lambda}-s{seed}"), "l0.01-s1");
  // a path in a value must not make nested directories
  EXPECT_EQ(run_name({{"config", {"recipes/a b.json"}}}, {"recipes/a b.json"}), "config=recipes_a_b.json");
  EXPECT_THROW(run_name(axes, {"0.01", "0"}, "{lamda}"), demp::Error);
  EXPECT_THROW(run_name(axes, {"0.01", "0"}, "{lambda"), demp::Error);
  EXPECT_EQ(run_names(axes, "").size(), 4u);
  EXPECT_THROW(run_names(axes, "l{lambda}"), demp::Error);  // seeds would collide
}

TEST(ReportGrid, BaseArgsLeaveTheSweepsOptionsAlone) {
  const std::vector<GridAxis> axes = {{"seed", {"0", "1"}}};
  EXPECT_NO_THROW(check_base_args({"--model", "mlp", "--steps=20", "--lr", "-1"}, axes));
  EXPECT_THROW(check_base_args({"--out", "x"}, axes), demp::Error);
  EXPECT_THROW(check_base_args({"--progress=none"}, axes), demp::Error);
  EXPECT_THROW(check_base_args({"--seed", "3"}, axes), demp::Error);
  EXPECT_THROW(check_base_args({"--modle", "mlp"}, axes), demp::Error);
  EXPECT_THROW(check_base_args({"lambda=0.1"}, axes), demp::Error);
}

// ---- the table ------------------------------------------------------------------------------

TEST(ReportTable, ColumnsRowsAndCsv) {
  ReportTemp t;
  const std::vector<GridAxis> axes = {{"lambda", {"0.01", "x,y"}}, {"seed", {"0"}}};
  const auto cols = table_columns(axes);
  EXPECT_EQ(cols[0], "run");
  EXPECT_EQ(cols[1], "lambda");
  EXPECT_EQ(cols[2], "seed");
  EXPECT_EQ(std::count(cols.begin(), cols.end(), "seed"), 1);  // not repeated as a summary column
  EXPECT_EQ(cols.back(), "status");
  for (const char* c : {"method", "model", "width", "dataset", "steps", "test_accuracy", "best_test_accuracy",
                        "units_fraction", "params_fraction", "flops_fraction", "train_seconds"}) {
    EXPECT_NE(std::find(cols.begin(), cols.end(), c), cols.end()) << c;
  }

  demp::make_directories(t.path + "/a");
  write(t.path + "/a/summary.json", summary(0.8, 200, 50).dump());
  const auto done = table_row("a", t.path + "/a", axes, {"0.01", "0"});
  EXPECT_EQ(done["status"], "finished");
  EXPECT_DOUBLE_EQ(done["units_fraction"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(done["params_fraction"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(done["lambda"].get<double>(), 0.01);  // a number in table.json
  EXPECT_EQ(done["model"], "mlp");

  // no summary: pending, or the status the sweep saw; settings from config.json
  demp::make_directories(t.path + "/b");
  write(t.path + "/b/config.json", json{{"method", "dense"}, {"model", "vgg16"}}.dump());
  const auto failed = table_row("b", t.path + "/b", axes, {"x,y", "0"}, "failed");
  EXPECT_EQ(failed["status"], "failed");
  EXPECT_EQ(failed["model"], "vgg16");
  EXPECT_TRUE(failed["test_accuracy"].is_null());
  EXPECT_EQ(table_row("c", t.path + "/c", axes, {"0.01", "0"})["status"], "pending");

  const auto csv = lines_of(table_csv(cols, {done, failed}));
  ASSERT_EQ(csv.size(), 3u);
  EXPECT_EQ(csv[0].rfind("run,lambda,seed,method,", 0), 0u);
  EXPECT_EQ(csv[2].rfind("b,\"x,y\",0,dense,vgg16,", 0), 0u) << csv[2];
  EXPECT_NE(csv[2].find(",,"), std::string::npos);  // empty cells for what a failed run lacks
}

// ---- the study ------------------------------------------------------------------------------

TEST(ReportStudy, DeadFractionCurveAtEachScan) {
  std::vector<json> rows = {
      {{"step", 10}, {"live_units", 100}},  // no scan yet
      {{"step", 20}, {"live_units", 100}, {"last_scan", {{"dead_units", 5}, {"step", 0}}}},
      {{"step", 30}, {"live_units", 100}, {"last_scan", {{"dead_units", 5}, {"step", 0}}}},
      {{"step", 40}, {"live_units", 80}, {"last_scan", {{"dead_units", 20}, {"step", 40}}}},
      {{"step", 50}, {"live_units", 80}, {"last_scan", {{"dead_units", 10}}}},  // no scan step
  };
  const auto c = dead_fraction_curve(rows);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].first, 0);
  EXPECT_DOUBLE_EQ(c[0].second, 0.05);
  EXPECT_EQ(c[1].first, 40);
  EXPECT_DOUBLE_EQ(c[1].second, 0.25);
  EXPECT_EQ(c[2].first, 50);
  EXPECT_DOUBLE_EQ(c[2].second, 0.125);
  EXPECT_TRUE(dead_fraction_curve({}).empty());
}

TEST(ReportStudy, ExpectationChecker) {
  // lr agrees (more dead at the higher lr), batch-size disagrees (more dead at the larger
  // batch), optimizer agrees (adamw above sgd), seed is just another fixed value.
  const std::vector<GridAxis> axes = {
      {"lr", {"0.01", "0.1"}}, {"batch-size", {"32", "256"}}, {"optimizer", {"sgd", "adamw"}}};
  std::vector<StudyRun> runs;
  for (const auto& p : expand_grid(axes)) {
    double f = 0.1;
    if (p[0] == "0.1") f += 0.2;
    if (p[1] == "256") f += 0.05;
    if (p[2] == "adamw") f += 0.01;
    runs.push_back({run_name(axes, p), p, true, f});
  }
  auto checks = check_expectations(axes, runs);
  auto find = [&](const std::string& f) {
    return *std::find_if(checks.begin(), checks.end(), [&](const FactorCheck& c) { return c.factor == f; });
  };
  EXPECT_EQ(find("lr").verdict, "agrees");
  EXPECT_EQ(find("lr").agree, 4);
  EXPECT_EQ(find("batch-size").verdict, "disagrees");
  EXPECT_EQ(find("batch-size").disagree, 4);
  EXPECT_EQ(find("optimizer").verdict, "agrees");
  EXPECT_EQ(find("lambda").verdict, "not tested");
  const auto lr = find("lr");
  const auto& c0 = lr.comparisons[0];
  EXPECT_EQ(c0.low, "0.01");
  EXPECT_EQ(c0.high, "0.1");
  EXPECT_FALSE(c0.fixed.empty());
  const std::string text = expectations_text(checks);
  EXPECT_NE(text.find("lr            agrees"), std::string::npos) << text;
  EXPECT_NE(text.find("disagrees"), std::string::npos);
  EXPECT_NE(text.find("0.01 -> 0.1"), std::string::npos);

  // numeric order, not text order; a failed run drops out of its comparisons
  const std::vector<GridAxis> lam = {{"lambda", {"0.1", "0.02", "0"}}};
  runs = {{"a", {"0.1"}, true, 0.3}, {"b", {"0.02"}, true, 0.3}, {"c", {"0"}, false, 0}};
  checks = check_expectations(lam, runs);
  EXPECT_EQ(find("lambda").verdict, "no difference");
  ASSERT_EQ(find("lambda").comparisons.size(), 1u);
  EXPECT_EQ(find("lambda").comparisons[0].low, "0.02");
  runs = {{"a", {"0.1"}, true, 0.3}, {"b", {"0.02"}, true, 0.1}, {"c", {"0"}, true, 0.2}};
  checks = check_expectations(lam, runs);
  EXPECT_EQ(find("lambda").verdict, "mixed");
}

TEST(ReportStudy, ArgsAndGrid) {
  StudyOptions o;
  o.lr = "0.1,0.01";
  o.optimizer = "sgd,adamw";
  o.grid = {"seed=0,1"};
  o.sweep.base_args = {"--model", "mlp"};
  EXPECT_EQ(study_grid(o), (std::vector<std::string>{"lr=0.1,0.01", "optimizer=sgd,adamw", "seed=0,1"}));
  EXPECT_EQ(study_base_args(o), (std::vector<std::string>{"--method", "scan", "--model", "mlp", "--lambda",
                                                          "0", "--noise", "0"}));
  o.lambda = "0,0.01";
  o.sweep.base_args = {"--noise=1e-5"};
  EXPECT_EQ(study_base_args(o), (std::vector<std::string>{"--method", "scan", "--noise=1e-5"}));
  o.sweep.base_args = {"--method", "demp"};
  EXPECT_THROW(study_base_args(o), demp::Error);
}

// ---- plots and HTML -------------------------------------------------------------------------

TEST(ReportPlots, NaturalOrderOfGroups) {
  EXPECT_TRUE(natural_less("conv2", "conv10"));
  EXPECT_FALSE(natural_less("conv10", "conv2"));
  EXPECT_TRUE(natural_less("conv13", "fc1"));
  EXPECT_EQ(
      group_order({"layer10.0.mid", "layer1.1.out", "layer2.0.mid", "layer1.0.out", "stem", "layer1.0.mid"}),
      (std::vector<std::string>{"stem", "layer1.0.mid", "layer1.0.out", "layer1.1.out", "layer2.0.mid",
                                "layer10.0.mid"}));
  EXPECT_EQ(group_order({"layer1.0.out", "layer1.0.mid2", "layer1.0.mid1"}),
            (std::vector<std::string>{"layer1.0.mid1", "layer1.0.mid2", "layer1.0.out"}));
}

TEST(ReportPlots, ScriptIsSelfContained) {
  PlotSpec p;
  p.name = "acc";
  p.title = "it's a_title";
  p.xlabel = "x";
  p.ylabel = "y";
  p.series = {{"demp", {{1, 2}, {3, 4}}, false, -1}, {"empty", {}, false, -1}};
  const std::string s = gnuplot_script(p, true);
  EXPECT_NE(s.find("'it''s a_title' noenhanced"), std::string::npos);  // quote doubled
  EXPECT_NE(s.find("$d0 << EOD\n1 2\n3 4\nEOD"), std::string::npos);
  EXPECT_EQ(s.find("$d1"), std::string::npos);  // an empty series is left out
  EXPECT_NE(s.find("set terminal svg"), std::string::npos);
  EXPECT_NE(s.find("set terminal pngcairo"), std::string::npos);
  EXPECT_NE(gnuplot_script(p, false).find("set terminal png "), std::string::npos);
  EXPECT_TRUE(has_data(p));
  p.series.pop_back();
  p.series[0].xy.clear();
  EXPECT_FALSE(has_data(p));
}

TEST(ReportPlots, MissingGnuplotIsAClearError) {
  try {
    find_gnuplot("/nonexistent/gnuplot");
    FAIL() << "no error";
  } catch (const demp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("gnuplot not found"), std::string::npos);
    EXPECT_NE(e.hint().find("gnuplot-nox"), std::string::npos);
  }
}

TEST(ReportPlots, RendersWithGnuplot) {
  if (find_executable("gnuplot").empty()) GTEST_SKIP() << "gnuplot is not installed";
  ReportTemp t;
  PlotSpec p;
  p.name = "widths";
  p.title = "widths";
  p.xtics = {"stem", "layer1.0.mid"};
  p.series = {{"run_a", {{0, 8}, {1, 4}}, false, -1}};
  render_plot(find_gnuplot(), p, t.path);
  const std::string svg = demp::read_file(t.path + "/widths.svg");
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("run_a"), std::string::npos);  // noenhanced: '_' is not a subscript
  EXPECT_TRUE(demp::is_regular_file(t.path + "/widths.png"));
  EXPECT_TRUE(demp::is_regular_file(t.path + "/widths.gp"));
}

TEST(ReportHtml, EscapeAndInlineSvg) {
  EXPECT_EQ(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
  const std::string svg =
      "<?xml version=\"1.0\"?>\n<svg viewBox=\"0 0 9 9\">\n<g id=\"gnuplot_canvas\">"
      "<path id='gpPt1' d='M0'/><use xlink:href='#gpPt1'/><g filter='url(#textbox)' grid='x'/>"
      "</g></svg>";
  EXPECT_EQ(inline_svg(svg, "p-"),
            "<svg viewBox=\"0 0 9 9\">\n<g id=\"p-gnuplot_canvas\"><path id='p-gpPt1' d='M0'/>"
            "<use xlink:href='#p-gpPt1'/><g filter='url(#p-textbox)' grid='x'/></g></svg>");
}

TEST(ReportHtml, CollectRunsAndCompareCells) {
  ReportTemp t;
  const std::string sw = t.path + "/sweep";
  for (const char* n : {"b", "a", "dense"}) demp::make_directories(sw + "/" + n);
  write(sw + "/a/summary.json", summary(0.80, 100, 25).dump());
  write(sw + "/b/config.json", json{{"method", "demp"}}.dump());  // not finished
  auto dense = summary(0.90, 100, 100, "dense");
  dense["train_seconds"] = 4.0;
  write(sw + "/dense/summary.json", dense.dump());
  // sweep.json gives the order; directories it does not name follow in natural order
  write(sw + "/sweep.json", json{{"runs", {{{"name", "b"}}, {{"name", "a"}}}}}.dump());

  std::vector<std::string> studies;
  auto runs = collect_runs({sw}, &studies);
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs[0].label, "b");
  EXPECT_EQ(runs[1].label, "a");
  EXPECT_EQ(runs[2].label, "dense");
  EXPECT_FALSE(runs[0].finished());
  EXPECT_TRUE(studies.empty());
  // several directories: labels say which sweep; a run directory is itself one run
  runs = collect_runs({sw, sw + "/a"});
  EXPECT_EQ(runs[0].label, "sweep/b");
  EXPECT_EQ(runs[3].label, sw + "/a");
  EXPECT_THROW(collect_runs({t.path + "/nothing"}), demp::Error);
  demp::make_directories(t.path + "/empty");
  EXPECT_THROW(collect_runs({t.path + "/empty"}), demp::Error);

  runs = collect_runs({sw});
  std::string base;
  const auto cells = compare_cells(runs, "", &base);
  ASSERT_EQ(cells.size(), 3u);  // header + the two finished runs
  EXPECT_EQ(cells[0][0], "run");
  EXPECT_EQ(cells[0].size(), 11u);
  EXPECT_EQ(base, "dense (mean of 1 run)");  // the dense runs, as in demp compare
  EXPECT_EQ(cells[1][0], "a");
  EXPECT_EQ(cells[1][1], "demp");
  EXPECT_EQ(cells[1][3], "0");  // the seed
  EXPECT_EQ(cells[1][4], "80.00%");
  EXPECT_EQ(cells[1][5], "-10.00");
  EXPECT_EQ(cells[1][6], "25.0");
  EXPECT_EQ(cells[1][10], "2.00x");
  EXPECT_EQ(compare_cells(runs, "a", &base)[2][10], "0.50x");
  EXPECT_EQ(base, "demp (mean of 1 run)");
  EXPECT_THROW(compare_cells(runs, "zzz"), demp::Error);
}

// ---- grouping: series, setting, seed ----------------------------------------------------------

namespace {

ReportRun derived(const json& summary, const json& config) {
  ReportRun r;
  if (!summary.is_null()) r.summary = demp::train::Summary::from_json(summary);
  r.config = config;
  derive_grouping(r);
  return r;
}

// A finished run directory: summary.json, config.json and a few metrics rows with what the
// trainer and DemP write (reg_lambda, noise_std, train_loss, test_accuracy, elapsed_seconds).
void fake_run(const std::string& dir, const std::string& method, double acc, int params, double seconds,
              int seed, const json& config = json::object()) {
  demp::make_directories(dir);
  json c = config;
  c["method"] = method;
  c["seed"] = seed;
  write(dir + "/config.json", c.dump());
  json s = summary(acc, 100, params, method);
  s["seed"] = seed;
  s["params_final"] = params;
  s["flops_final"] = params * 10;
  s["train_seconds"] = seconds;
  s["live_units_per_group"] = {{"fc1", params}, {"fc2", params / 2}};
  if (method != "dense") {
    s["prune_events"] = {{{"step", 10}, {"units_before", 100}, {"units_after", params}}};
  }
  write(dir + "/summary.json", s.dump());
  std::string rows;
  for (int step = 5; step <= 20; step += 5) {
    json r = {{"step", step},
              {"live_units", step < 10 ? 100 : params},
              {"elapsed_seconds", seconds * step / 20},
              {"train_loss", 2.0 / step},
              {"test_accuracy", acc * step / 20}};
    if (method == "demp") {
      r["reg_lambda"] = 0.01 * step;
      r["noise_std"] = 1e-4 / step;
    }
    rows += r.dump() + "\n";
  }
  write(dir + "/metrics.jsonl", rows);
}

// A frontier directory as `demp frontier` writes it: dense and DemP at two levels, two seeds.
std::string fake_frontier(const std::string& root) {
  const std::string f = root + "/front";
  json runs = json::array();
  for (int seed = 0; seed < 2; ++seed) {
    const std::string d = "dense-s" + std::to_string(seed);
    fake_run(f + "/" + d, "dense", 0.90 + 0.02 * seed, 100, 4.0, seed);
    runs.push_back(
        {{"name", d}, {"series", "dense"}, {"method", "dense"}, {"level", nullptr}, {"seed", seed}});
    for (double level : {0.5, 0.25}) {
      const std::string n = fmt::format("demp-p{}-s{}", level, seed);
      fake_run(f + "/" + n, "demp", 0.80 + 0.02 * seed + level / 10, static_cast<int>(100 * level) + seed,
               2.0, seed, {{"target-params", level}});
      runs.push_back(
          {{"name", n}, {"series", "DemP (ours)"}, {"method", "demp"}, {"level", level}, {"seed", seed}});
    }
  }
  write(f + "/frontier.json",
        json{{"kind", "frontier"}, {"levels", {0.5, 0.25}}, {"seeds", {0, 1}}, {"runs", runs}}.dump());
  return f;
}

}  // namespace

TEST(ReportGroups, DerivedFromSummaryAndConfig) {
  auto r = derived(summary(0.8, 10, 5, "demp"), {{"target-params", 0.25}, {"seed", 3}});
  EXPECT_EQ(r.series, "demp");
  EXPECT_EQ(r.setting, "25%");
  EXPECT_DOUBLE_EQ(r.level, 0.25);
  EXPECT_EQ(r.seed, 3);  // config's seed over the summary's
  r = derived(summary(0.8, 10, 5, "demp"), {{"l1-step", "loss"}, {"lambda", 0.01}});
  EXPECT_EQ(r.series, "demp (paper)");
  EXPECT_EQ(r.setting, "λ 0.01");
  EXPECT_TRUE(std::isnan(r.level));
  EXPECT_EQ(r.seed, 0);  // from the summary
  r = derived(summary(0.8, 10, 5, "demp"), {{"target-flops", 0.1}, {"lambda", 0.01}});
  EXPECT_EQ(r.setting, "FLOPs 10%");
  r = derived(summary(0.8, 10, 5, "slimming"), {{"density", 0.3}, {"lambda", 0.01}});
  EXPECT_EQ(r.series, "slimming");
  EXPECT_EQ(r.setting, "d 0.3");
  r = derived(summary(0.8, 10, 10, "dense"), {{"density", 1}, {"lambda", 0.01}});
  EXPECT_EQ(r.setting, "");
  r = derived(nullptr, {{"method", "snap"}, {"density", 0.125}, {"seed", 2}});  // not finished
  EXPECT_EQ(r.series, "snap");
  EXPECT_EQ(r.setting, "d 0.125");
  EXPECT_EQ(r.seed, 2);
  EXPECT_EQ(level_text(0.25), "25%");
  EXPECT_EQ(level_text(0.1), "10%");
  EXPECT_EQ(level_text(0.125), "12.5%");
  EXPECT_EQ(level_text(0.05), "5%");
}

TEST(ReportGroups, StatsOverSeeds) {
  const Stat s = stat_of({1, 2, 3});
  EXPECT_DOUBLE_EQ(s.mean, 2);
  EXPECT_DOUBLE_EQ(s.std, 1);  // sample standard deviation
  EXPECT_EQ(s.n, 3u);
  EXPECT_DOUBLE_EQ(stat_of({4}).std, 0);
  EXPECT_TRUE(std::isnan(stat_of({}).mean));
}

TEST(ReportGroups, FrontierDirectory) {
  ReportTemp t;
  const std::string f = fake_frontier(t.path);
  // A run frontier.json does not name is still reported, with the derived grouping.
  fake_run(f + "/zz-extra", "slimming", 0.7, 30, 3.0, 0, {{"density", 0.3}});
  const auto runs = collect_runs({f});
  ASSERT_EQ(runs.size(), 7u);
  EXPECT_EQ(runs[0].label, "dense-s0");  // frontier.json's order
  EXPECT_EQ(runs[0].series, "dense");
  EXPECT_EQ(runs[0].setting, "");
  EXPECT_EQ(runs[1].series, "DemP (ours)");  // frontier.json's series, not the method
  EXPECT_EQ(runs[1].setting, "50%");
  EXPECT_EQ(runs[4].seed, 1);
  EXPECT_EQ(runs[6].series, "slimming");
  EXPECT_EQ(runs[6].setting, "d 0.3");

  const auto groups = group_runs(runs);
  ASSERT_EQ(groups.size(), 4u);
  EXPECT_EQ(groups[0].series, "dense");
  EXPECT_EQ(groups[1].setting, "50%");  // most parameters left first
  EXPECT_EQ(groups[2].setting, "25%");
  EXPECT_EQ(groups[1].finished.size(), 2u);
  EXPECT_NEAR(groups[1].accuracy.mean, 0.86, 1e-12);
  EXPECT_NEAR(groups[1].accuracy.std, 0.02 * std::sqrt(0.5), 1e-12);
  EXPECT_NEAR(groups[2].params.mean, 0.255, 1e-12);
  EXPECT_EQ(groups[2].representative()->seed, 0);

  std::string base;
  const auto cells = summary_cells(runs, "", &base);
  EXPECT_EQ(base, "dense (mean of 2 runs)");
  ASSERT_EQ(cells.size(), 5u);
  EXPECT_EQ(cells[0], (std::vector<std::string>{"series", "setting", "seeds", "test acc %", "Δ acc",
                                                "params %", "FLOPs %", "units %", "train s", "speed-up"}));
  EXPECT_EQ(cells[1][0], "dense");
  EXPECT_EQ(cells[1][1], "-");
  EXPECT_EQ(cells[1][2], "2");
  EXPECT_EQ(cells[1][3], "91.00 ± 1.41");
  EXPECT_EQ(cells[1][9], "1.00x");
  EXPECT_EQ(cells[2][0], "DemP (ours)");
  EXPECT_EQ(cells[2][1], "50%");
  EXPECT_EQ(cells[2][3], "86.00 ± 1.41");
  EXPECT_EQ(cells[2][4], "-5.00");
  EXPECT_EQ(cells[2][5], "50.5 ± 0.7");
  EXPECT_EQ(cells[2][9], "2.00x");  // dense's mean 4 s over 2 s
  EXPECT_EQ(cells[4][0], "slimming");
  EXPECT_EQ(cells[4][2], "1");
  EXPECT_EQ(cells[4][3], "70.00");  // one seed: no ± 0
  // --baseline names a run: its group is the reference
  EXPECT_EQ(summary_cells(runs, "demp-p0.5-s1", &base)[2][9], "1.00x");
  EXPECT_EQ(base, "DemP (ours) 50% (mean of 2 runs)");
}

TEST(ReportPlots, PaletteTellsTwelveSeriesApart) {
  std::set<std::string> colors;
  std::set<int> markers;
  std::set<std::pair<std::string, int>> both;
  for (int i = 0; i < kPaletteSize; ++i) {
    colors.insert(palette_color(i));
    markers.insert(palette_marker(i));
    EXPECT_NE(palette_color(i), "#000000");  // black is the dense reference's
  }
  EXPECT_EQ(colors.size(), static_cast<size_t>(kPaletteSize));
  EXPECT_EQ(markers.size(), static_cast<size_t>(kPaletteSize));
  for (int i = 0; i < kPaletteSize * (kPaletteSize + 1); ++i) {
    both.insert({palette_color(i), palette_marker(i)});
  }
  EXPECT_EQ(both.size(), static_cast<size_t>(kPaletteSize * (kPaletteSize + 1)));
}

TEST(ReportPlots, RangesArePaddedInLogSpace) {
  auto [lo, hi] = padded_range(5, 25, true, 0.1);
  EXPECT_LT(lo, 5);
  EXPECT_GT(hi, 25);
  EXPECT_NEAR(std::log10(5) - std::log10(lo), std::log10(hi) - std::log10(25), 1e-12);
  std::tie(lo, hi) = padded_range(10, 10, true);  // one point: not on the frame either
  EXPECT_NEAR(lo, 5, 1e-9);
  EXPECT_NEAR(hi, 20, 1e-9);
  std::tie(lo, hi) = padded_range(80, 80, false);
  EXPECT_LT(lo, 80);
  EXPECT_GT(hi, 80);
  const auto t = log_tics(4, 30);
  for (double v : {5.0, 10.0, 20.0}) {
    EXPECT_NE(std::find(t.begin(), t.end(), v), t.end()) << v;
  }
  const auto wide = log_tics(1e-7, 0.5);
  EXPECT_NE(std::find(wide.begin(), wide.end(), 0.01), wide.end());
  EXPECT_EQ(std::find(wide.begin(), wide.end(), 0.02), wide.end());  // decades only
}

TEST(ReportPlots, AccuracyPlotScript) {
  PlotSpec p;
  p.name = "acc";
  p.title = "acc";
  p.logx = true;
  Series ref;
  ref.title = "dense";
  ref.reference = true;
  ref.color = kReferenceColor;
  ref.xy = {{1, 90}};
  ref.yerr = {0.5};
  Series s;
  s.title = "DemP";
  s.xy = {{5, 80}, {25, 85}};
  s.yerr = {1, 0.5};
  s.labels = {"5%", "25%"};
  p.series = {ref, s};
  p.xmarks = {{25, "25%"}};
  const std::string g = gnuplot_script(p, true);
  EXPECT_NE(g.find("set logscale x"), std::string::npos);
  EXPECT_NE(g.find("with filledcurves"), std::string::npos) << g;  // the dense band
  EXPECT_NE(g.find("using 1:4 with lines lc rgb '#000000'"), std::string::npos) << g;
  EXPECT_NE(g.find("with yerrorlines lc rgb '" + palette_color(1) + "'"), std::string::npos) << g;
  EXPECT_NE(g.find("with labels"), std::string::npos);
  EXPECT_NE(g.find("5 80 1 \"5%\""), std::string::npos) << g;
  EXPECT_NE(g.find("set key below"), std::string::npos);
  EXPECT_NE(g.find("set arrow from 25, graph 0"), std::string::npos);
  // the padded range holds every point and error bar off the frame
  double x0, x1, y0, y1;
  ASSERT_EQ(std::sscanf(g.substr(g.find("set xrange")).c_str(), "set xrange [%lf:%lf]", &x0, &x1), 2);
  ASSERT_EQ(std::sscanf(g.substr(g.find("set yrange")).c_str(), "set yrange [%lf:%lf]", &y0, &y1), 2);
  EXPECT_LT(x0, 5);
  EXPECT_GT(x1, 25);
  EXPECT_LT(y0, 79);
  EXPECT_GT(y1, 90.5);
}

TEST(ReportHtml, ReportOnAFrontier) {
  if (find_executable("gnuplot").empty()) GTEST_SKIP() << "gnuplot is not installed";
  ReportTemp t;
  ReportOptions o;
  o.dirs = {fake_frontier(t.path)};
  o.out = t.path + "/report";
  testing::internal::CaptureStdout();
  EXPECT_EQ(run_report(o), 0);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("DemP (ours)"), std::string::npos) << out;
  const std::string html = demp::read_file(o.out + "/index.html");
  for (const char* name : {"accuracy_vs_params", "accuracy_vs_flops", "accuracy_vs_units", "accuracy_vs_time",
                           "live_units", "lambda_schedule", "noise_schedule", "train_loss", "test_accuracy",
                           "accuracy_vs_wallclock", "layer_widths"}) {
    EXPECT_TRUE(demp::is_regular_file(o.out + "/" + std::string(name) + ".svg")) << name;
    EXPECT_TRUE(demp::is_regular_file(o.out + "/" + std::string(name) + ".png")) << name;
    EXPECT_NE(html.find("<figure id=\"" + std::string(name) + "\">"), std::string::npos) << name;
  }
  EXPECT_NE(html.find("<table id=\"summary\">"), std::string::npos);
  EXPECT_NE(html.find("<td>DemP (ours)</td><td>25%</td><td>2</td>"), std::string::npos);
  const std::string gp = demp::read_file(o.out + "/accuracy_vs_params.gp");
  EXPECT_NE(gp.find("dense 91.00 ± 1.41% (2 runs)"), std::string::npos) << gp;
  EXPECT_NE(gp.find("\"25%\""), std::string::npos);                     // the points' labels
  EXPECT_NE(gp.find("set arrow from 50, graph 0"), std::string::npos);  // the levels
  // prune events marked on the λ curve: a points-only series
  const std::string lambda = demp::read_file(o.out + "/lambda_schedule.gp");
  EXPECT_NE(lambda.find("with points"), std::string::npos);
  EXPECT_NE(lambda.find("keyentry with points"), std::string::npos);  // and named in the legend
}

// ---- a sweep end to end, with a stand-in for demp ---------------------------------------------

namespace {

// Records its arguments, fails for seed 1, else writes a finished summary.json.
const char* kFakeDemp = R"SH(#!/bin/sh
out=""; prev=""
for a in "$@"; do
  [ "$prev" = "--out" ] && out=$a
  prev=$a
done
echo "$*" >> "$(dirname "$out")/calls.txt"
case " $* " in
  *" --seed 1 "*) echo "training..."; echo "demp: error: boom (hint: none)"; exit 3 ;;
esac
echo '{"status": "finished", "method": "demp", "test_accuracy": 0.5, "units_initial": 10,' > "$out/s"
echo ' "units_final": 4, "train_seconds": 1.5}' >> "$out/s"
mv "$out/s" "$out/summary.json"
)SH";

}  // namespace

TEST(ReportSweep, SkipsResumesAndReportsFailures) {
  ReportTemp t;
  const std::string exe = t.path + "/fake-demp";
  write(exe, kFakeDemp);
  ASSERT_EQ(::chmod(exe.c_str(), 0755), 0);
  SweepOptions o;
  o.out = t.path + "/sw";
  o.grid = {"seed=0,1,2"};
  o.base_args = {"--model", "mlp"};
  o.exe = exe;

  auto r = run_sweep(o);
  EXPECT_EQ(r.failed, 1);
  ASSERT_EQ(r.runs.size(), 3u);
  EXPECT_EQ(r.runs[0].status, "finished");
  EXPECT_EQ(r.runs[1].status, "failed");
  EXPECT_EQ(r.runs[1].exit_code, 3);
  EXPECT_EQ(r.runs[1].last_line, "demp: error: boom (hint: none)");
  EXPECT_EQ(r.runs[2].status, "finished");
  auto calls = lines_of(demp::read_file(o.out + "/calls.txt"));
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0], "train --model mlp --seed 0 --out " + o.out + "/seed=0 --progress plain");
  EXPECT_TRUE(demp::is_regular_file(o.out + "/seed=1/output.log"));
  EXPECT_NE(demp::read_file(o.out + "/seed=1/output.log").find("boom"), std::string::npos);

  const json sj = json::parse(demp::read_file(o.out + "/sweep.json"));
  EXPECT_EQ(sj["grid"][0]["key"], "seed");
  EXPECT_EQ(sj["base_args"], json({"--model", "mlp"}));
  EXPECT_EQ(sj["runs"].size(), 3u);
  auto csv = lines_of(demp::read_file(o.out + "/table.csv"));
  ASSERT_EQ(csv.size(), 4u);
  EXPECT_NE(csv[2].find(",failed"), std::string::npos) << csv[2];
  EXPECT_NE(csv[1].find(",0.4,"), std::string::npos) << csv[1];  // units fraction
  const json tj = json::parse(demp::read_file(o.out + "/table.json"));
  EXPECT_EQ(tj["rows"].size(), 3u);
  EXPECT_EQ(tj["columns"][0], "run");
  EXPECT_NE(sweep_summary(r, o.out).find("exit 3: demp: error: boom"), std::string::npos);

  // Again: the finished runs are skipped, the failed one is retried (and fails again).
  r = run_sweep(o);
  EXPECT_TRUE(r.runs[0].skipped && r.runs[2].skipped);
  EXPECT_EQ(r.failed, 1);
  calls = lines_of(demp::read_file(o.out + "/calls.txt"));
  ASSERT_EQ(calls.size(), 4u);
  EXPECT_NE(calls[3].find("--seed 1"), std::string::npos);

  // A checkpoint without a finished summary is resumed; a started run without one, restarted.
  write(o.out + "/seed=1/model.ckpt", "x");
  demp::make_directories(o.out + "/seed=2");
  demp::remove_file(o.out + "/seed=2/summary.json");
  write(o.out + "/seed=2/config.json", "{}");
  run_sweep(o);
  calls = lines_of(demp::read_file(o.out + "/calls.txt"));
  ASSERT_EQ(calls.size(), 6u);
  EXPECT_NE(calls[4].find("--seed 1 --out " + o.out + "/seed=1 --progress plain --resume"), std::string::npos)
      << calls[4];
  EXPECT_NE(calls[5].find("--progress plain --overwrite"), std::string::npos) << calls[5];

  // A diverged run is not retried: resuming it would replay the same steps.
  write(o.out + "/seed=1/summary.json", json{{"status", "diverged"}}.dump());
  r = run_sweep(o);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.runs[1].status, "diverged");
  EXPECT_EQ(lines_of(demp::read_file(o.out + "/calls.txt")).size(), 6u);

  // Other base options in the same directory would mix two settings in one table.
  o.base_args = {"--model", "vgg16"};
  EXPECT_THROW(run_sweep(o), demp::Error);
}

TEST(ReportSweep, DryRunWritesNothing) {
  ReportTemp t;
  SweepOptions o;
  o.out = t.path + "/dry";
  o.grid = {"lambda=0.1,0.2", "seed=0,1"};
  o.dry_run = true;
  testing::internal::CaptureStdout();
  const auto r = run_sweep(o);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(r.runs.size(), 4u);
  EXPECT_NE(out.find("[4/4] lambda=0.2_seed=1: demp train --lambda 0.2 --seed 1"), std::string::npos) << out;
  EXPECT_FALSE(demp::file_exists(o.out));
}

TEST(ReportProcess, ExitCodesAndLastLine) {
  std::vector<std::string> seen;
  auto r = run_process({"/bin/sh", "-c", "echo one; echo two >&2; exit 4"},
                       [&](const std::string& l) { seen.push_back(l); });
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_EQ(r.last_line, "two");
  EXPECT_EQ(seen.size(), 2u);
  r = run_process({"/bin/sh", "-c", "kill -9 $$"});
  EXPECT_EQ(r.signal, 9);
  EXPECT_EQ(r.exit_code, 137);
  r = run_process({"/nonexistent/program"});
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_EQ(shell_join({"demp", "a b", "it's"}), "demp 'a b' 'it'\\''s'");
}

// ---- summary.json: the typed Summary and the run-directory reader ----------------------------

namespace {

// A finished summary as training writes it (every key, with a validation split).
json finished_summary_json() {
  return json::parse(R"({
  "batch_size": 128, "best_test_accuracy": 0.75, "best_val_accuracy": 0.5, "dataset": "fashion-mnist",
  "device": "cpu", "epochs": 5.0, "flops_final": 31590, "flops_initial": 218368, "graph": false,
  "graph_captures": 0, "live_units_per_group": {"fc1": 19, "fc2": 31}, "method": "demp",
  "method_state": {"collapsed_groups": ["fc1"], "scan": {"dead_units": 2, "step": 100}},
  "model": "mlp", "optimizer": "adamw", "params_final": 15905, "params_initial": 109578,
  "precision": "fp32",
  "prune_events": [{"flops_after": 31590, "groups": {"fc1": [128, 19]}, "params_after": 15905,
                    "reason": "dead", "step": 20, "units_after": 50, "units_before": 192}],
  "run_dir": "/tmp/x", "seed": 0, "status": "finished", "steps": 100, "test_accuracy": 0.7,
  "test_accuracy_at_best_val": 0.69, "train_seconds": 0.25, "units_final": 50, "units_initial": 192,
  "warning": "some unit groups died entirely (the network collapsed there); see log.txt",
  "width": 0.25, "world_size": 1})");
}

// A diverged run's summary: the checkpoint's metadata (the method's state under "method").
json diverged_summary_json() {
  return json::parse(R"({
  "best_test_accuracy": null, "best_val_accuracy": null, "checkpoint": false,
  "config": {"method": "dense", "model": "mlp", "seed": 0}, "data_order": "epoch permutation",
  "diverged_at_step": 1, "evaluated": false, "finished": false, "method": {}, "prune_events": [],
  "run_dir": "/tmp/c", "seed": 0, "status": "diverged", "step": 1, "test_accuracy": null,
  "test_accuracy_at_best_val": null, "train_seconds": 0.3})");
}

}  // namespace

TEST(Summary, RoundTripsBothShapesKeyForKey) {
  for (const json& j : {finished_summary_json(), diverged_summary_json()}) {
    const auto s = demp::train::Summary::from_json(j);
    EXPECT_EQ(s.to_json().dump(2), j.dump(2));
    EXPECT_EQ(demp::train::Summary::from_json(s.to_json()).to_json(), s.to_json());
  }
  const auto f = demp::train::Summary::from_json(finished_summary_json());
  EXPECT_TRUE(f.is_finished());
  EXPECT_EQ(f.method, "demp");
  EXPECT_DOUBLE_EQ(*f.test_accuracy, 0.7);
  EXPECT_DOUBLE_EQ(*f.fraction_left("units"), 50.0 / 192);
  EXPECT_EQ(f.live_units_per_group.at("fc2"), 31);
  EXPECT_TRUE(f.warning.has_value());
  EXPECT_FALSE(f.dist_backend.has_value());  // absent stays absent
  const auto d = demp::train::Summary::from_json(diverged_summary_json());
  EXPECT_EQ(d.method, "dense");               // from its config: "method" holds the state
  EXPECT_FALSE(d.test_accuracy.has_value());  // null: not measured, not 0.0
  EXPECT_EQ(*d.diverged_at_step, 1);
}

TEST(Summary, AnOlderFileReadsWithEmptyFields) {
  const auto s = demp::train::Summary::from_json(json{{"status", "finished"}, {"test_accuracy", 0.5}});
  EXPECT_EQ(*s.test_accuracy, 0.5);
  EXPECT_FALSE(s.best_test_accuracy.has_value());
  EXPECT_FALSE(s.units_final.has_value());
  EXPECT_FALSE(s.fraction_left("params").has_value());
  EXPECT_FALSE(s.train_seconds.has_value());
  EXPECT_TRUE(s.to_json()["best_test_accuracy"].is_null());  // written back as null, not 0.0
  EXPECT_EQ(demp::train::Summary::from_json(s.to_json()).to_json(), s.to_json());
  EXPECT_THROW(demp::train::Summary::from_json(json{{"test_accuracy", "high"}}), demp::Error);
  EXPECT_THROW(demp::train::Summary::from_json(json::array()), demp::Error);
}

TEST(Summary, ReadFromARunDirectory) {
  ReportTemp t;
  namespace tr = demp::train;
  EXPECT_FALSE(tr::read_summary(t.path).has_value());
  EXPECT_FALSE(tr::is_run_dir(t.path));
  try {
    tr::load_summary(t.path);
    FAIL() << "expected an error for a missing summary";
  } catch (const demp::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no summary.json"), std::string::npos) << e.what();
    EXPECT_FALSE(e.hint().empty());
  }
  write(tr::RunFiles::in(t.path, tr::RunFiles::summary), "{not json");
  EXPECT_FALSE(tr::read_summary(t.path).has_value());  // damaged: as if none
  EXPECT_THROW(tr::load_summary(t.path), demp::Error);
  write(tr::RunFiles::in(t.path, tr::RunFiles::summary), finished_summary_json().dump());
  write(tr::RunFiles::in(t.path, tr::RunFiles::config), json{{"method", "demp"}}.dump());
  write(tr::RunFiles::in(t.path, tr::RunFiles::metrics), "{\"step\": 1}\n{\"step\": 2, \"lo\n");
  const auto run = tr::read_run(t.path);
  ASSERT_TRUE(run.summary.has_value());
  EXPECT_EQ(run.summary->steps, 100);
  EXPECT_EQ(run.config["method"], "demp");
  EXPECT_TRUE(tr::is_run_dir(t.path));
  EXPECT_EQ(tr::read_metrics(t.path).size(), 1u);  // the torn line is skipped
}
