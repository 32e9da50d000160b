#include "demp/cli/report_cmds.h"

#include <CLI/CLI.hpp>
#include <cstdio>

namespace demp::cli {

namespace {

const char* kTrainOptionsFooter =
    "Everything after '--' goes to every 'demp train' run unchanged (see 'demp train --help'); "
    "the sweep itself sets --out DIR/<run>, --progress plain, and --resume or --overwrite where "
    "needed.";

void add_train_options(CLI::App* cmd, std::vector<std::string>& args) {
  // A minimum of one value keeps a "--" inside this subcommand: CLI11 hands "--" back to the
  // parent app when the subcommand has no positional still waiting for a value. It is not
  // required: a sweep over train's defaults has nothing after "--".
  cmd->add_option("train-options", args, "demp train options for every run (after '--')")->expected(1, -1);
  cmd->footer(kTrainOptionsFooter);
}

void add_sweep(CLI::App& app, ReportCommands& st) {
  auto* sw = app.add_subcommand("sweep", "train every point of a grid of train options (resumable)");
  st.sweep_cmd = sw;
  auto& so = st.sweep;
  sw->add_option("--out", so.out, "sweep directory (runs go to DIR/<run-name>)")->required();
  sw->add_option("--grid", so.grid,
                 "KEY=V1,V2,... : a train option (no dashes) and its values; repeat for more "
                 "axes (values split on ';' instead when the list holds one)")
      ->required()
      ->expected(1)
      ->allow_extra_args(false)  // else CLI11 lets a list option swallow the "--" that follows it
      ->take_all();
  sw->add_option("--name-format", so.name_format,
                 "run directory names, {KEY} for a grid value (default: KEY=VALUE joined by '_')");
  sw->add_flag("--verbose", so.verbose, "echo every run's output (always in DIR/<run>/output.log)");
  sw->add_flag("--dry-run", so.dry_run, "print the runs and their commands; run nothing");
  add_train_options(sw, so.base_args);
}

void add_study(CLI::App& app, ReportCommands& st) {
  auto* sd = app.add_subcommand(
      "study", "the paper's dying-neuron study: dead units over training, lr/batch/optimizer/λ/σ");
  st.study_cmd = sd;
  auto& to = st.study;
  sd->add_option("--out", to.sweep.out, "study directory (runs go to DIR/<run-name>)")->required();
  sd->add_option("--lr", to.lr, "learning rates, comma-separated");
  sd->add_option("--batch-size", to.batch_size, "batch sizes, comma-separated");
  sd->add_option("--optimizer", to.optimizer, "optimizers (sgd, sgdw, adamw), comma-separated");
  sd->add_option("--lambda", to.lambda,
                 "regulariser strengths λ*, comma-separated (unswept: 0 unless given after --)");
  sd->add_option("--noise", to.noise, "noise σ peaks, comma-separated (unswept: 0 unless given after --)");
  sd->add_option("--grid", to.grid, "further axes KEY=V1,V2,... as in demp sweep (e.g. seed=0,1)")
      ->expected(1)
      ->allow_extra_args(false)
      ->take_all();
  sd->add_option("--method", to.method,
                 "train method of every run: scan (dense, counts dead units, removes none)")
      ->capture_default_str();
  sd->add_option("--name-format", to.sweep.name_format, "run directory names, as in demp sweep");
  sd->add_flag("--no-plot", to.no_plot, "skip the plot (no gnuplot needed)");
  sd->add_option("--gnuplot", to.gnuplot, "the gnuplot program")->capture_default_str();
  sd->add_flag("--verbose", to.sweep.verbose, "echo every run's output");
  sd->add_flag("--dry-run", to.sweep.dry_run, "print the runs and their commands; run nothing");
  add_train_options(sd, to.sweep.base_args);
}

void add_frontier(CLI::App& app, ReportCommands& st) {
  auto* fr = app.add_subcommand(
      "frontier",
      "dense, DemP and every baseline driven to the same sizes over several seeds: one table "
      "(resumable)");
  st.frontier_cmd = fr;
  auto& fo = st.frontier;
  fr->add_option("--out", fo.out, "frontier directory (runs go to DIR/<method>-p<level>-s<seed>)")
      ->required();
  fr->add_option("--levels", fo.levels,
                 "fractions of the network kept, comma-separated (default 0.25,0.1,0.05; --quick: 0.25)")
      ->delimiter(',');
  fr->add_option("--measure", fo.measure, "what --levels are fractions of: params, flops or units")
      ->capture_default_str();
  fr->add_option("--seeds", fo.seeds, "seeds per setting (default 3; --quick: 1)");
  fr->add_option("--first-seed", fo.first_seed, "the first seed (seeds are consecutive)")
      ->capture_default_str();
  std::string methods_help = "methods, comma-separated (default: all):";
  for (const auto& s : report::frontier_catalogue()) methods_help += " " + s.key + " (" + s.note + ");";
  fr->add_option("--methods", fo.methods, methods_help)->delimiter(',');
  fr->add_option("--jobs", fo.jobs,
                 "runs side by side, each with cores/jobs LibTorch threads unless --threads is given "
                 "after '--'")
      ->capture_default_str();
  fr->add_flag("--quick", fo.quick, "a CI-sized smoke: 1 seed, level 0.25, 40 steps on 2048 training images");
  fr->add_flag("--verbose", fo.verbose, "echo every run's output (always in DIR/<run>/output.log)");
  fr->add_flag("--dry-run", fo.dry_run, "print the runs and their commands; run nothing");
  add_train_options(fr, fo.base_args);
  fr->footer(
      "Everything after '--' goes to every 'demp train' run unchanged, e.g. -- --config "
      "recipes/fashion-mnist-vgg16-dense.json. The frontier sets --method, --target-*, --seed, "
      "--out and --progress on every run itself.");
}

void add_report(CLI::App& app, ReportCommands& st) {
  auto* rp =
      app.add_subcommand("report", "plots and one self-contained HTML page over run and sweep directories");
  st.report_cmd = rp;
  auto& ro = st.report;
  rp->add_option("dirs", ro.dirs, "run directories and/or sweep directories")->required();
  rp->add_option("--out", ro.out, "report directory (default: DIR/report for one DIR, else ./report)");
  rp->add_option("--baseline", ro.baseline,
                 "a run (label or directory) whose setting is the reference: its seeds' mean training "
                 "time is 1.00x and Δ acc is against their mean accuracy (default: the dense runs)");
  rp->add_option("--title", ro.title, "page title")->capture_default_str();
  rp->add_option("--gnuplot", ro.gnuplot, "the gnuplot program")->capture_default_str();
}

}  // namespace

void add_report_commands(CLI::App& app, ReportCommands& st) {
  add_sweep(app, st);
  add_study(app, st);
  add_frontier(app, st);
  add_report(app, st);
}

int run_report_commands(const ReportCommands& st) {
  if (st.sweep_cmd && *st.sweep_cmd) {
    const auto r = report::run_sweep(st.sweep);
    if (st.sweep.dry_run) return 0;
    std::printf("%s", report::sweep_summary(r, st.sweep.out).c_str());
    if (r.interrupted != 0) return 130;
    return r.failed > 0 ? 1 : 0;
  }
  if (st.study_cmd && *st.study_cmd) return report::run_study(st.study);
  if (st.report_cmd && *st.report_cmd) return report::run_report(st.report);
  if (st.frontier_cmd && *st.frontier_cmd) return report::run_frontier(st.frontier);
  return -1;
}

}  // namespace demp::cli
