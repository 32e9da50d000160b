#include "demp/train/summary.h"

#include "demp/common/error.h"

namespace demp::train {

using nlohmann::json;

namespace {

// A key read with the wrong type is an error that names it: the file was edited or damaged.
[[noreturn]] void wrong_type(const char* key, const char* want, const json& v) {
  throw Error(std::string("summary.json: \"") + key + "\" is " + v.type_name() + ", not " + want,
              "the file is damaged or was edited; a run writes it when it ends");
}

bool absent(const json& j, const char* key) { return !j.contains(key) || j[key].is_null(); }

std::optional<double> opt_double(const json& j, const char* key) {
  if (absent(j, key)) return std::nullopt;
  if (!j[key].is_number()) wrong_type(key, "a number", j[key]);
  return j[key].get<double>();
}

std::optional<int64_t> opt_int(const json& j, const char* key) {
  if (absent(j, key)) return std::nullopt;
  const json& v = j[key];
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number()) return static_cast<int64_t>(v.get<double>());
  wrong_type(key, "a number", v);
}

std::optional<std::string> opt_string(const json& j, const char* key) {
  if (absent(j, key)) return std::nullopt;
  if (!j[key].is_string()) wrong_type(key, "a string", j[key]);
  return j[key].get<std::string>();
}

std::optional<bool> opt_bool(const json& j, const char* key) {
  if (absent(j, key)) return std::nullopt;
  if (!j[key].is_boolean()) wrong_type(key, "true or false", j[key]);
  return j[key].get<bool>();
}

template <class T>
json or_null(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

template <class T>
void put_if(json& j, const char* key, const std::optional<T>& v) {
  if (v) j[key] = *v;
}

}  // namespace

std::pair<std::optional<int64_t>, std::optional<int64_t>> Summary::counts(const std::string& q) const {
  if (q == "units") return {units_initial, units_final};
  if (q == "params") return {params_initial, params_final};
  if (q == "flops") return {flops_initial, flops_final};
  throw Error("Summary::counts: no counts of " + q, "use units, params or flops");
}

std::optional<double> Summary::fraction_left(const std::string& q) const {
  const auto [initial, final_] = counts(q);
  if (!initial || !final_ || *initial <= 0) return std::nullopt;
  return static_cast<double>(*final_) / static_cast<double>(*initial);
}

json Summary::to_json() const {
  json s;
  if (is_finished()) {
    s = json{{"status", status},
             {"run_dir", run_dir},
             {"method", method},
             {"model", model},
             {"width", or_null(width)},
             {"dataset", dataset},
             {"seed", or_null(seed)},
             {"steps", or_null(steps)},
             {"epochs", or_null(epochs)},
             {"batch_size", or_null(batch_size)},
             {"optimizer", optimizer},
             {"test_accuracy", or_null(test_accuracy)},
             {"best_test_accuracy", or_null(best_test_accuracy)},
             {"units_initial", or_null(units_initial)},
             {"units_final", or_null(units_final)},
             {"params_initial", or_null(params_initial)},
             {"params_final", or_null(params_final)},
             {"flops_initial", or_null(flops_initial)},
             {"flops_final", or_null(flops_final)},
             {"live_units_per_group", live_units_per_group},
             {"train_seconds", or_null(train_seconds)},
             {"device", device},
             {"precision", precision},
             {"graph", graph},
             {"graph_captures", graph_captures},
             {"world_size", world_size},
             {"prune_events", prune_events},
             {"method_state", method_state}};
    // Present only where they apply (a validation split, data-parallel training...).
    put_if(s, "warning", warning);
    put_if(s, "bad_images_skipped", bad_images_skipped);
    put_if(s, "best_val_accuracy", best_val_accuracy);
    put_if(s, "test_accuracy_at_best_val", test_accuracy_at_best_val);
    put_if(s, "dist_backend", dist_backend);
    put_if(s, "replicas_identical", replicas_identical);
    put_if(s, "allreduce_bytes_per_step_initial", allreduce_bytes_per_step_initial);
    put_if(s, "allreduce_bytes_per_step_final", allreduce_bytes_per_step_final);
    return s;
  }
  s = json{{"step", step},
           {"finished", finished},
           {"config", config},
           {"method", method_state},
           {"prune_events", prune_events},
           {"seed", or_null(seed)},
           {"data_order", data_order},
           {"best_test_accuracy", or_null(best_test_accuracy)},
           {"best_val_accuracy", or_null(best_val_accuracy)},
           {"test_accuracy_at_best_val", or_null(test_accuracy_at_best_val)},
           {"test_accuracy", or_null(test_accuracy)},
           {"train_seconds", or_null(train_seconds)},
           {"evaluated", evaluated},
           {"status", status},
           {"run_dir", run_dir}};
  put_if(s, "diverged_at_step", diverged_at_step);
  put_if(s, "interrupted_at_step", interrupted_at_step);
  put_if(s, "checkpoint", checkpoint);
  return s;
}

Summary Summary::from_json(const json& j) {
  if (!j.is_object()) {
    throw Error(std::string("summary.json holds ") + j.type_name() + ", not an object",
                "the file is damaged or was edited; a run writes it when it ends");
  }
  Summary s;
  s.status = opt_string(j, "status").value_or("");
  s.run_dir = opt_string(j, "run_dir").value_or("");
  s.seed = opt_int(j, "seed");
  s.test_accuracy = opt_double(j, "test_accuracy");
  s.best_test_accuracy = opt_double(j, "best_test_accuracy");
  s.best_val_accuracy = opt_double(j, "best_val_accuracy");
  s.test_accuracy_at_best_val = opt_double(j, "test_accuracy_at_best_val");
  s.train_seconds = opt_double(j, "train_seconds");
  if (!absent(j, "prune_events")) {
    if (!j["prune_events"].is_array()) wrong_type("prune_events", "an array", j["prune_events"]);
    s.prune_events = j["prune_events"];
  }
  // A finished summary names the method and keeps its state apart; an early one (the
  // checkpoint's metadata) holds the state under "method" and the name in its config.
  if (j.contains("method_state")) s.method_state = j["method_state"];
  if (j.contains("method") && !j["method"].is_string()) {
    if (!j.contains("method_state")) s.method_state = j["method"];
  } else {
    s.method = opt_string(j, "method").value_or("");
  }
  if (j.contains("config")) s.config = j["config"];
  if (s.method.empty() && s.config.is_object() && s.config.contains("method") &&
      s.config["method"].is_string()) {
    s.method = s.config["method"].get<std::string>();
  }
  s.model = opt_string(j, "model").value_or("");
  s.dataset = opt_string(j, "dataset").value_or("");
  s.optimizer = opt_string(j, "optimizer").value_or("");
  s.device = opt_string(j, "device").value_or("");
  s.precision = opt_string(j, "precision").value_or("");
  s.width = opt_double(j, "width");
  s.epochs = opt_double(j, "epochs");
  s.steps = opt_int(j, "steps");
  s.batch_size = opt_int(j, "batch_size");
  s.units_initial = opt_int(j, "units_initial");
  s.units_final = opt_int(j, "units_final");
  s.params_initial = opt_int(j, "params_initial");
  s.params_final = opt_int(j, "params_final");
  s.flops_initial = opt_int(j, "flops_initial");
  s.flops_final = opt_int(j, "flops_final");
  if (!absent(j, "live_units_per_group")) {
    const json& g = j["live_units_per_group"];
    if (!g.is_object()) wrong_type("live_units_per_group", "an object", g);
    for (auto it = g.begin(); it != g.end(); ++it) {
      if (!it.value().is_number()) wrong_type("live_units_per_group", "an object of numbers", g);
      s.live_units_per_group[it.key()] = it.value().is_number_integer()
                                             ? it.value().get<int64_t>()
                                             : static_cast<int64_t>(it.value().get<double>());
    }
  }
  s.graph = opt_bool(j, "graph").value_or(false);
  s.graph_captures = opt_int(j, "graph_captures").value_or(0);
  s.world_size = opt_int(j, "world_size").value_or(1);
  s.warning = opt_string(j, "warning");
  s.bad_images_skipped = opt_int(j, "bad_images_skipped");
  s.dist_backend = opt_string(j, "dist_backend");
  s.replicas_identical = opt_bool(j, "replicas_identical");
  s.allreduce_bytes_per_step_initial = opt_int(j, "allreduce_bytes_per_step_initial");
  s.allreduce_bytes_per_step_final = opt_int(j, "allreduce_bytes_per_step_final");

  s.step = opt_int(j, "step").value_or(0);
  s.finished = opt_bool(j, "finished").value_or(false);
  s.data_order = opt_string(j, "data_order").value_or("");
  s.evaluated = opt_bool(j, "evaluated").value_or(s.test_accuracy.has_value());
  s.diverged_at_step = opt_int(j, "diverged_at_step");
  s.interrupted_at_step = opt_int(j, "interrupted_at_step");
  s.checkpoint = opt_bool(j, "checkpoint");
  return s;
}

}  // namespace demp::train
