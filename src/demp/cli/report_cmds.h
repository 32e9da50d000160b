#pragma once
// The subcommands that drive many runs and read them back: sweep, study, frontier, report. main.cpp
// adds them beside train/eval/... and runs them after parsing:
//   ReportCommands rc;  add_report_commands(app, rc);  ...parse...
//   if (const int code = run_report_commands(rc); code >= 0) return code;
#include "demp/report/frontier.h"
#include "demp/report/html.h"
#include "demp/report/study.h"
#include "demp/report/sweep.h"

namespace CLI {
class App;
}

namespace demp::cli {

/// What the three subcommands parse into; it must outlive the parse (CLI11 binds to it).
struct ReportCommands {
  CLI::App* sweep_cmd = nullptr;
  CLI::App* study_cmd = nullptr;
  CLI::App* report_cmd = nullptr;
  CLI::App* frontier_cmd = nullptr;
  report::SweepOptions sweep;
  report::StudyOptions study;
  report::ReportOptions report;
  report::FrontierOptions frontier;
};

/// Adds `sweep`, `study`, `frontier` and `report` to `app`.
void add_report_commands(CLI::App& app, ReportCommands& state);

/// Runs the one of them that was selected and returns its exit code (0 ok, 1 some run failed);
/// -1 when none of them was selected. User errors throw demp::Error.
int run_report_commands(const ReportCommands& state);

}  // namespace demp::cli
