#pragma once
// The table of a sweep's runs (table.csv, table.json): one row per run from its summary.json.
// LibTorch-free.
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "demp/report/grid.h"

namespace demp::report {

/// The columns of table.csv/table.json: run, every grid key, then the fixed summary columns.
std::vector<std::string> table_columns(const std::vector<GridAxis>& axes);

/// One row of the table for the run in `dir`: read from its summary (and its config for what a
/// summary without them lacks), through train::read_run(). `status` overrides the row's status when not empty
/// ("failed", "pending"); otherwise it is the summary's status, or "pending" without one.
nlohmann::ordered_json table_row(const std::string& name, const std::string& dir,
                                 const std::vector<GridAxis>& axes, const std::vector<std::string>& point,
                                 const std::string& status = {});

/// CSV text (RFC 4180 quoting) of `rows` under `columns`; a missing or null cell is empty.
std::string table_csv(const std::vector<std::string>& columns,
                      const std::vector<nlohmann::ordered_json>& rows);

/// Writes DIR/table.csv and DIR/table.json ({"columns": [...], "rows": [{...}]}) atomically.
void write_tables(const std::string& dir, const std::vector<std::string>& columns,
                  const std::vector<nlohmann::ordered_json>& rows);

/// Reads a JSON file (sweep.json, frontier.json, study.json; a run directory's files are read
/// through train/run_dir.h); a missing or unreadable file gives null (the callers report what lacks).
nlohmann::json read_json_or_null(const std::string& path);

}  // namespace demp::report
