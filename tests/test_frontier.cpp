// demp frontier: the plan (names, commands, refusals), the aggregation over seeds (mean, sample
// std, speed-up against dense, the best method per level), and the whole command driven with a
// stand-in for the demp binary (a shell script), so that parallel runs, skipping, resuming and
// failures are tested without training anything.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "demp/common/error.h"
#include "demp/common/files.h"
#include "demp/report/frontier.h"
#include "test_util.h"

using namespace demp;
using namespace demp::report;
using nlohmann::json;

namespace {

size_t lines_in(const std::string& text) {
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

std::string arg_after(const std::vector<std::string>& argv, const std::string& flag) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) return argv[i + 1];
  }
  return {};
}

// A demp stand-in: writes a finished summary whose accuracy and size follow from the options
// (accuracy 0.9 − 0.1·(1 − level) + 0.01·seed, params at the level, train time level·100 s), and
// fails for --method snap. It records each call in DIR/calls.
std::string write_stand_in(const std::string& dir) {
  const std::string path = dir + "/demp-stand-in.sh";
  write_file_atomic(path, R"(#!/bin/sh
out= ; seed=0 ; method= ; level=1
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift ;;
    --seed) seed=$2; shift ;;
    --method) method=$2; shift ;;
    --target-params) level=$2; shift ;;
  esac
  shift
done
echo "$method $seed $level" >> "$(dirname "$out")/calls"
mkdir -p "$out"
echo '{}' > "$out/config.json"
if [ "$method" = snap ]; then echo "snap: something went wrong" >&2; exit 3; fi
awk -v s="$seed" -v l="$level" -v m="$method" 'BEGIN {
  acc = 0.9 - 0.1 * (1 - l) + 0.01 * s; if (m == "demp") acc += 0.005
  printf "{\"status\": \"finished\", \"method\": \"%s\", \"seed\": %d, \"steps\": 100, \"test_accuracy\": %.6f, \"units_initial\": 100, \"units_final\": %d, \"params_initial\": 1000, \"params_final\": %d, \"flops_initial\": 10, \"flops_final\": %d, \"train_seconds\": %.3f, \"method_state\": {\"controller\": {\"reached_step\": 30}}}\n", m, s, acc, 100 * l, 1000 * l, 10 * l, 100 * l
}' > "$out/summary.json"
)");
  ::chmod(path.c_str(), 0755);
  return path;
}

}  // namespace

TEST(Frontier, PlansEverySeriesAtEveryLevelAndEverySeed) {
  FrontierOptions o;
  o.out = "/tmp/f";
  o.base_args = {"--config", "recipes/frontier-fashion-mnist-mlp.json"};
  const auto runs = plan_frontier(o);
  // dense once per seed, the 10 sized series at 3 levels, 3 seeds
  ASSERT_EQ(runs.size(), 3u * (1 + 10 * 3));
  EXPECT_EQ(runs[0].name, "dense-s0");
  EXPECT_EQ(runs[1].name, "demp-p0.25-s0");
  EXPECT_EQ(runs.back().name, "random-p0.05-s2");
  const auto& paper = runs[4];
  EXPECT_EQ(paper.name, "demp-paper-p0.25-s0");
  EXPECT_EQ(arg_after(paper.argv, "--l1-step"), "loss");
  EXPECT_EQ(arg_after(paper.argv, "--constant-units"), "keep");
  EXPECT_EQ(arg_after(paper.argv, "--target-params"), "0.25");
  EXPECT_EQ(arg_after(paper.argv, "--seed"), "0");
  EXPECT_EQ(arg_after(paper.argv, "--config"), "recipes/frontier-fashion-mnist-mlp.json");
  EXPECT_EQ(arg_after(paper.argv, "--out"), "/tmp/f/demp-paper-p0.25-s0");
  EXPECT_EQ(arg_after(runs[7].argv, "--l1-cost"), "flops");  // demp-flops-p0.25-s0
  EXPECT_EQ(arg_after(runs[0].argv, "--target-params"), "");  // dense is not sized
  // every run has the same base options: same steps, data and optimizer for every row
  for (const auto& r : runs)
    EXPECT_EQ(arg_after(r.argv, "--config"), "recipes/frontier-fashion-mnist-mlp.json");

  o.quick = true;
  o.methods = {"random", "dense"};  // given out of order: catalogue order is kept
  o.measure = "flops";
  const auto q = plan_frontier(o);
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[0].name, "dense-s0");
  EXPECT_EQ(q[1].name, "random-f0.25-s0");
  EXPECT_EQ(arg_after(q[1].argv, "--target-flops"), "0.25");
  EXPECT_EQ(arg_after(q[1].argv, "--steps"), "40");
  o.jobs = 2;
  EXPECT_NE(arg_after(plan_frontier(o)[0].argv, "--threads"), "");
}

TEST(Frontier, RefusesWhatWouldMakeRowsIncomparable) {
  FrontierOptions o;
  o.out = "/tmp/f";
  auto refused = [&](const std::string& what) {
    try {
      plan_frontier(o);
    } catch (const Error& e) {
      return std::string(e.what()).find(what) != std::string::npos;
    }
    return false;
  };
  o.base_args = {"--seed", "3"};
  EXPECT_TRUE(refused("sets --seed"));
  o.base_args = {"--target-params", "0.1"};
  EXPECT_TRUE(refused("sets --target-params"));
  o.base_args = {"--l1-step", "prox"};
  EXPECT_TRUE(refused("demp-paper"));
  o.base_args = {"--no-such-option", "1"};
  EXPECT_TRUE(refused("no option"));
  o.base_args = {};
  o.methods = {"demp", "nonsense"};
  EXPECT_TRUE(refused("unknown method 'nonsense'"));
  o.methods = {"demp", "demp"};
  EXPECT_TRUE(refused("twice"));
  o.methods = {};
  o.levels = {0.25, 1.5};
  EXPECT_TRUE(refused("not a fraction"));
  o.levels = {0.1, 0.1};
  EXPECT_TRUE(refused("repeats"));
  o.levels = {};
  o.measure = "bytes";
  EXPECT_TRUE(refused("unknown --measure"));
  o.measure = "params";
  o.jobs = 0;
  EXPECT_TRUE(refused("--jobs"));
}

TEST(Frontier, RunsSideBySideAggregatesSeedsAndResumes) {
  test::TempDir tmp;
  FrontierOptions o;
  o.out = tmp.path + "/fr";
  o.exe = write_stand_in(tmp.path);
  o.methods = {"dense", "demp", "random", "snap"};
  o.levels = {0.5, 0.1};
  o.seeds = 2;
  o.jobs = 3;
  EXPECT_EQ(run_frontier(o), 1);  // snap fails in the stand-in
  const json t = json::parse(read_file(o.out + "/table.json"));
  const auto& rows = t["rows"];
  ASSERT_EQ(rows.size(), 1u + 3 * 2);
  // dense: seeds 0 and 1 at level 1 -> 0.90 and 0.91
  EXPECT_EQ(rows[0]["method"], "dense");
  EXPECT_NEAR(rows[0]["test_accuracy_mean"].get<double>(), 0.905, 1e-9);
  EXPECT_NEAR(rows[0]["test_accuracy_std"].get<double>(), std::sqrt(0.00005), 1e-9);  // sample std
  // DemP at 0.1: 0.9 − 0.09 + 0.005 + (0, 0.01) -> mean 0.82, params 10%, 10 s against dense 100 s
  const auto& d01 = rows[2];
  EXPECT_EQ(d01["method"], "DemP (ours)");
  EXPECT_DOUBLE_EQ(d01["level"].get<double>(), 0.1);
  EXPECT_EQ(d01["seeds_finished"], 2);
  EXPECT_NEAR(d01["test_accuracy_mean"].get<double>(), 0.82, 1e-9);
  EXPECT_NEAR(d01["params_fraction"].get<double>(), 0.1, 1e-9);
  EXPECT_NEAR(d01["speedup_vs_dense"].get<double>(), 10.0, 1e-6);
  EXPECT_NEAR(d01["target_reached_at"].get<double>(), 0.3, 1e-9);
  EXPECT_TRUE(d01["best"].get<bool>());  // DemP beats random by 0.005 in the stand-in
  EXPECT_TRUE(d01["at_level"].get<bool>());
  EXPECT_EQ(rows[6]["method"], "random (init)");  // catalogue order: dense, demp, ..., snap, ..., random
  EXPECT_FALSE(rows[6]["best"].get<bool>());
  // snap: both runs failed, no accuracy, never best
  EXPECT_EQ(rows[3]["method"], "SNAP");
  EXPECT_EQ(rows[3]["seeds_finished"], 0);
  EXPECT_TRUE(rows[3]["test_accuracy_mean"].is_null());
  EXPECT_FALSE(rows[3]["best"].get<bool>());
  // the Markdown table marks the best and the per-run table lists every run
  const std::string md = read_file(o.out + "/table.md");
  EXPECT_NE(md.find("| **DemP (ours)** | 10%"), std::string::npos) << md;
  EXPECT_NE(read_file(o.out + "/runs.csv").find("snap-p0.1-s1"), std::string::npos);
  const json fj = json::parse(read_file(o.out + "/frontier.json"));
  EXPECT_EQ(fj["kind"], "frontier");
  EXPECT_EQ(fj["runs"][1]["series"], "DemP (ours)");
  EXPECT_EQ(fj["runs"][1]["level"], 0.5);

  // a second invocation runs only what did not finish (the four snap runs), and a third seed
  // extends it
  const size_t calls = lines_in(read_file(o.out + "/calls"));
  EXPECT_EQ(calls, 2u * (1 + 3 * 2));
  o.seeds = 3;
  EXPECT_EQ(run_frontier(o), 1);
  EXPECT_EQ(lines_in(read_file(o.out + "/calls")), calls + 4 + (1 + 3 * 2));
  // options that only change how a run is run may be added to continue it
  o.base_args = {"--checkpoint-every", "10", "--threads=1"};
  EXPECT_EQ(run_frontier(o), 1);  // the snap runs fail again; nothing refused
  // other train options in the same directory are refused: rows would mix settings
  o.base_args = {"--lr", "0.1"};
  EXPECT_THROW(run_frontier(o), Error);
  o.base_args = {"--checkpoint-every", "10", "--lr", "0.1"};
  EXPECT_THROW(run_frontier(o), Error);
}
