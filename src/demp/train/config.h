#pragma once
// The run configuration. One list of fields (name, help, pointer) drives the CLI flags, the JSON
// config file, the saved config.json and the README's option table, so they cannot drift apart.
#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace demp::data {
struct ImageOptions;
}
namespace demp::nn {
struct ArchShape;
struct ModelOptions;
}  // namespace demp::nn

namespace demp::train {

struct TrainConfig;

/// The value of a method's option: text, number, integer or switch.
using OptionValue = std::variant<std::string, double, int64_t, bool>;

/// An option that a method declares in its own file (src/demp/methods/): its flag and JSON key,
/// help, default, and README/--help group. It behaves like every other field (flag, --config key,
/// config.json, --resume check, README row); the loop never reads it, the method parses it into
/// its own options struct when it is built (before any work).
struct OptionSpec {
  std::string name;  ///< flag name without dashes, and the JSON key
  std::string help = {};
  OptionValue def = {};
  std::string group = {};  ///< heading in --help and the README
  /// The methods it acts on (`methods`: these only; `not_methods`: every method but these; both
  /// empty: no warning). Given with another --method, the option draws a warning: "--X has no
  /// effect with --method M", or "--X applies to <applies_to> only, not to --method M".
  std::vector<std::string> methods = {}, not_methods = {};
  std::string applies_to = {};
  /// Checks the value before any work (throws demp::Error with a hint); may be empty.
  std::function<void(const TrainConfig&)> check = {};
  /// Further warnings when the option is given and acts (e.g. a step beyond the run's `total`
  /// steps; 0: not known yet); may be empty.
  std::function<void(const TrainConfig&, int64_t total, std::vector<std::string>*)> warn = {};
};

/// Declares a module's options (a method's file, once, at start-up:
/// `const int kOptions = declare_options("gradual", {...});`). Throws std::logic_error for a name
/// declared twice. Returns the number of options declared.
int declare_options(const std::string& module, std::vector<OptionSpec> specs);
/// Every declared option, in display order: by group, then module name, then declaration order.
const std::vector<OptionSpec>& declared_options();

struct TrainConfig {
  // model
  std::string model = "resnet18";
  double width = 0.25;
  std::string mlp_widths = "512,256";
  std::string stem = "auto";
  std::string arch;  ///< architecture file (instead of --model)
  std::string init;  ///< checkpoint whose network (architecture and weights) training starts from
  // data
  std::string data = "fashion-mnist";
  std::string augment = "auto";
  int64_t val_size = 0;
  int64_t train_limit = 0;
  int64_t test_limit = 0;
  // image folders (imagefolder:DIR, imagenet:DIR)
  int64_t image_size = 224;
  std::string crop_scale = "0.08,1";
  double eval_crop = 0.875;
  std::string bad_images = "error";
  int64_t decode_threads = 0;
  int64_t prefetch = 4;
  // method (its options are declared by the methods themselves: method_options below)
  std::string method = "dense";
  // schedule of the run
  int64_t epochs = 5;
  int64_t steps = 0;
  int64_t batch_size = 128;
  std::string optimizer = "adamw";
  double lr = 2e-3;
  std::string lr_schedule = "onecycle";
  double weight_decay = 5e-4;
  double momentum = 0.9;
  double label_smoothing = 0.0;
  // run
  int64_t seed = 0;
  std::string device = "cpu";
  std::string precision = "auto";
  std::string graph = "auto";
  int64_t threads = 0;
  std::string out;
  bool resume = false;
  bool overwrite = false;
  int64_t stop_after = 0;
  int64_t checkpoint_every = 0;
  int64_t log_every = 50;
  int64_t eval_batch_size = 1000;
  std::string progress = "auto";
  std::string tensorboard;  ///< directory of TensorBoard events files ("": none)
  /// Not an option: the names of the fields set explicitly (on the command line or in a config
  /// file). --resume refuses changes to those it cannot apply; warnings name no-op options.
  std::vector<std::string> given;
  // data-parallel
  int64_t nproc = 0;
  int64_t dist_timeout = 300;
  bool sync_bn = false;
  /// The values of the options the methods declare (declare_options), by flag name; a declared
  /// option that is not here has its default. Flags, JSON and config.json treat them as fields.
  std::map<std::string, OptionValue> method_options;

  /// The value of the declared option `name` (this run's or its default). T must be its type
  /// (std::string, double, int64_t or bool); a name that no method declares or a wrong type is a
  /// programming error (std::logic_error).
  template <class T>
  T get(const std::string& name) const {
    const OptionValue& v = option_value(name);
    if (!std::holds_alternative<T>(v)) wrong_type(name);
    return std::get<T>(v);
  }
  /// Sets the declared option `name`; an integer may set a double option. Throws
  /// std::logic_error for an undeclared name or a wrong type.
  template <class T>
  void set(const std::string& name, const T& v) {
    if constexpr (std::is_same_v<T, bool>) {
      set_option(name, OptionValue(v));
    } else if constexpr (std::is_integral_v<T>) {
      set_option(name, OptionValue(static_cast<int64_t>(v)));
    } else if constexpr (std::is_floating_point_v<T>) {
      set_option(name, OptionValue(static_cast<double>(v)));
    } else {
      set_option(name, OptionValue(std::string(v)));
    }
  }

 private:
  const OptionValue& option_value(const std::string& name) const;
  [[noreturn]] static void wrong_type(const std::string& name);
  void set_option(const std::string& name, OptionValue v);
};

struct Field {
  std::string name;  ///< flag name without dashes, and the JSON key
  std::string help;
  std::variant<std::string*, double*, int64_t*, bool*> ptr;
  std::string group;  ///< heading in --help and the README
};

/// The fields of `c`, in display order.
std::vector<Field> fields(TrainConfig& c);

/// Applies a JSON object to `c`; throws demp::Error naming an unknown key or a wrong type.
void apply_json(TrainConfig& c, const nlohmann::json& j, const std::string& source);
nlohmann::json to_json(const TrainConfig& c);
/// The value of a field as text (for --help defaults).
std::string value_string(const Field& f);

/// Checks ranges and combinations; throws demp::Error with a hint.
void validate(const TrainConfig& c);

/// Options that are given but do nothing in this configuration, or that contradict each other
/// mildly (e.g. --lambda with --method dense): one line each, for a warning. `total_steps` is the
/// run's length (0: unknown yet).
std::vector<std::string> config_warnings(const TrainConfig& c, int64_t total_steps);

/// The image-folder options of `c` (--image-size, --crop-scale, --eval-crop, --bad-images,
/// --decode-threads: 0 gives the cores `training_threads` leaves free, at least 1; --prefetch;
/// --augment: auto/crop-flip, crop, flip, none). Throws demp::Error on a malformed value.
void image_options(const TrainConfig& c, int64_t training_threads, data::ImageOptions* out);

/// The zoo network `c` describes (--model, --width, --mlp-widths, --stem) for inputs and classes
/// of `shape` (nn/arch.h). Throws demp::Error on a malformed --mlp-widths.
nn::ModelOptions model_options(const TrainConfig& c, const nn::ArchShape& shape);

/// The options --resume may change (how the run is run, not what it computes).
const std::vector<std::string>& resume_changeable();

}  // namespace demp::train
