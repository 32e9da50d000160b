// The only file that sees ONNX and protobuf headers (see onnx_proto.h for why). No LibTorch here.
#include "demp/export/onnx_proto.h"

#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <cstring>
#include <exception>

#include "demp/common/error.h"

namespace demp::export_ {

namespace {

// ONNX raw_data is little-endian; copying the in-memory bytes is only right on such a host.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ONNX raw_data needs a little-endian host");

template <typename T>
std::string raw_bytes(const std::vector<T>& v) {
  std::string s(v.size() * sizeof(T), '\0');
  if (!v.empty()) std::memcpy(&s[0], v.data(), s.size());
  return s;
}

void fill_value(onnx::ValueInfoProto* vi, const OnnxValue& v) {
  vi->set_name(v.name);
  if (!v.doc.empty()) vi->set_doc_string(v.doc);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto_DataType_FLOAT);
  auto* shape = tt->mutable_shape();
  for (size_t i = 0; i < v.dims.size(); ++i) {
    auto* d = shape->add_dim();
    if (i < v.symbols.size() && !v.symbols[i].empty()) {
      d->set_dim_param(v.symbols[i]);
    } else {
      d->set_dim_value(v.dims[i]);
    }
  }
}

void fill_node(onnx::NodeProto* n, const OnnxNode& x) {
  n->set_op_type(x.op_type);
  n->set_name(x.name);
  for (const auto& i : x.inputs) n->add_input(i);
  for (const auto& o : x.outputs) n->add_output(o);
  for (const auto& a : x.attrs) {
    auto* p = n->add_attribute();
    p->set_name(a.name);
    switch (a.kind) {
      case OnnxAttr::Int:
        p->set_type(onnx::AttributeProto_AttributeType_INT);
        p->set_i(a.i);
        break;
      case OnnxAttr::Ints:
        p->set_type(onnx::AttributeProto_AttributeType_INTS);
        for (int64_t v : a.ints) p->add_ints(v);
        break;
      case OnnxAttr::Float:
        p->set_type(onnx::AttributeProto_AttributeType_FLOAT);
        p->set_f(a.f);
        break;
      case OnnxAttr::String:
        p->set_type(onnx::AttributeProto_AttributeType_STRING);
        p->set_s(a.s);
        break;
    }
  }
}

onnx::ModelProto to_proto(const OnnxModel& m) {
  onnx::ModelProto p;
  p.set_ir_version(onnx::IR_VERSION);
  p.set_producer_name("demp");
  p.set_producer_version(m.producer_version);
  p.set_domain("org.demp");
  p.set_model_version(1);
  p.set_doc_string(m.doc);
  auto* op = p.add_opset_import();
  op->set_domain("");
  op->set_version(m.opset);
  for (const auto& [k, v] : m.metadata) {
    auto* e = p.add_metadata_props();
    e->set_key(k);
    e->set_value(v);
  }
  auto* g = p.mutable_graph();
  g->set_name(m.graph_name);
  for (const auto& v : m.inputs) fill_value(g->add_input(), v);
  for (const auto& v : m.outputs) fill_value(g->add_output(), v);
  for (const auto& t : m.initializers) {
    auto* x = g->add_initializer();
    x->set_name(t.name);
    for (int64_t d : t.dims) x->add_dims(d);
    if (t.is_int64) {
      x->set_data_type(onnx::TensorProto_DataType_INT64);
      x->set_raw_data(raw_bytes(t.ints));
    } else {
      x->set_data_type(onnx::TensorProto_DataType_FLOAT);
      x->set_raw_data(raw_bytes(t.floats));
    }
  }
  for (const auto& n : m.nodes) fill_node(g->add_node(), n);
  return p;
}

}  // namespace

std::string serialize_onnx(const OnnxModel& m) {
  onnx::ModelProto p = to_proto(m);
  std::string bytes;
  if (!p.SerializeToString(&bytes)) {
    throw Error("cannot serialise the ONNX model (is it larger than 2 GB?)");
  }
  // Check a copy: shape inference annotates the graph, and the file stays lean without that.
  try {
    onnx::checker::check_model(p);
    onnx::ShapeInferenceOptions strict(/*check_type=*/true, /*error_mode=*/1);
    onnx::shape_inference::InferShapes(p, onnx::OpSchemaRegistry::Instance(), strict);
  } catch (const std::exception& e) {
    throw Error(std::string("the ONNX checker rejected the exported graph: ") + e.what(),
                "this is a bug in demp's exporter; please report it with the checkpoint");
  }
  return bytes;
}

bool looks_like_onnx(const std::string& bytes) {
  onnx::ModelProto p;
  return p.ParseFromString(bytes) && p.ir_version() > 0 && p.has_graph() && p.opset_import_size() > 0;
}

OnnxInfo read_onnx_info(const std::string& bytes, const std::string& what) {
  onnx::ModelProto p;
  if (!p.ParseFromString(bytes) || !p.has_graph() || p.opset_import_size() == 0) {
    throw Error(what + " is not an ONNX model", "give a file written by demp export --format onnx");
  }
  OnnxInfo r;
  r.producer = p.producer_name();
  r.producer_version = p.producer_version();
  r.doc = p.doc_string();
  r.ir_version = p.ir_version();
  for (const auto& o : p.opset_import()) {
    if (o.domain().empty() || o.domain() == "ai.onnx") r.opset = o.version();
  }
  for (const auto& e : p.metadata_props()) r.metadata.emplace_back(e.key(), e.value());
  for (const auto& v : p.graph().input()) r.inputs.push_back(v.name());
  for (const auto& v : p.graph().output()) r.outputs.push_back(v.name());
  r.nodes = static_cast<size_t>(p.graph().node_size());
  r.initializers = static_cast<size_t>(p.graph().initializer_size());
  return r;
}

}  // namespace demp::export_
