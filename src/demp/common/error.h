#pragma once
// One error type for everything a user can get wrong. The CLI prints it as one line with a hint
// and exits non-zero; nothing else in demp prints stack traces at users.
#include <stdexcept>
#include <string>

namespace demp {

class Error : public std::runtime_error {
 public:
  Error(const std::string& what, std::string hint = {}) : std::runtime_error(what), hint_(std::move(hint)) {}
  const std::string& hint() const { return hint_; }

 private:
  std::string hint_;
};

}  // namespace demp
