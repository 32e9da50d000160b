// The ONNX side of a build made without Debian's libonnx-dev/libprotobuf (-DDEMP_ONNX=OFF, for
// machines that only train, e.g. a GPU box without those packages). Writing or reading ONNX
// then fails with a clear error; everything else in demp works.
#include "demp/common/error.h"
#include "demp/export/onnx_proto.h"

namespace demp::export_ {
namespace {
[[noreturn]] void no_onnx() {
  throw Error("this demp was built without ONNX support (-DDEMP_ONNX=OFF)",
              "rebuild with libonnx-dev and libprotobuf-dev installed (scripts/setup), or export "
              "with --format torch");
}
}  // namespace

std::string serialize_onnx(const OnnxModel&) { no_onnx(); }

// Without protobuf nothing is recognised as ONNX; such files then fail as unreadable checkpoints.
bool looks_like_onnx(const std::string&) { return false; }

OnnxInfo read_onnx_info(const std::string&, const std::string&) { no_onnx(); }

}  // namespace demp::export_
