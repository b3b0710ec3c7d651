// oneDNN convolution, forward and both backward passes, as XLA FFI handlers for the CPU.
//
// Layouts are the models' own: activations NHWC, kernels HWIO (grouped kernels
// HW(I/G)O, output channels group-major, as lax.conv_general_dilated). Activations
// are used in place; kernels are reordered into the layout the primitive prefers
// (format_tag::any), because plain HWIO sends both backward passes to a slow
// gemm-based implementation. Each pool thread runs the primitive on its chunk of the
// batch; the kernel gradient is summed over the chunks in f32.

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "onednn_common.h"

namespace cnn_cases {

// The convolution's window, from the call's named attributes: strides, padding before
// and after each spatial dimension, kernel dilation (1: none, as lax's rhs_dilation)
// and feature groups.
struct ConvAttrs {
  int64_t stride_h, stride_w;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  int64_t dilation_h, dilation_w;
  int64_t groups;
};

}  // namespace cnn_cases

XLA_FFI_REGISTER_STRUCT_ATTR_DECODING(cnn_cases::ConvAttrs,
                                      ::xla::ffi::StructMember<int64_t>("stride_h"),
                                      ::xla::ffi::StructMember<int64_t>("stride_w"),
                                      ::xla::ffi::StructMember<int64_t>("pad_top"),
                                      ::xla::ffi::StructMember<int64_t>("pad_bottom"),
                                      ::xla::ffi::StructMember<int64_t>("pad_left"),
                                      ::xla::ffi::StructMember<int64_t>("pad_right"),
                                      ::xla::ffi::StructMember<int64_t>("dilation_h"),
                                      ::xla::ffi::StructMember<int64_t>("dilation_w"),
                                      ::xla::ffi::StructMember<int64_t>("groups"));

namespace cnn_cases {
namespace {

enum ConvPass : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// Geometry of one convolution, read from the buffers and the attributes.
struct ConvGeom {
  int64_t n, h, w, c, kh, kw, o, oh, ow, groups;
  memory::dims strides, dilates, pad_l, pad_r;
  memory::data_type dt;

  std::vector<int64_t> Key(ConvPass pass, int64_t mb) const {
    return {pass, static_cast<int64_t>(dt), mb, h, w, c, kh, kw, o, oh, ow, groups,
            strides[0], strides[1], dilates[0], dilates[1], pad_l[0], pad_l[1],
            pad_r[0], pad_r[1]};
  }
  memory::desc Src(int64_t mb) const { return memory::desc({mb, c, h, w}, dt, tag::nhwc); }
  memory::desc Dst(int64_t mb) const { return memory::desc({mb, o, oh, ow}, dt, tag::nhwc); }
  size_t SrcBytes(int64_t mb) const { return Src(mb).get_size(); }
  size_t DstBytes(int64_t mb) const { return Dst(mb).get_size(); }
  memory::dims WeightDims() const {
    if (groups == 1) return {o, c, kh, kw};
    return {groups, o / groups, c / groups, kh, kw};
  }
  // The user's HWIO kernel, described by strides over oneDNN's logical dims.
  memory::desc UserWeights() const {
    const int64_t ci = c / groups;
    if (groups == 1) return memory::desc(WeightDims(), dt, {1, o, kw * ci * o, ci * o});
    return memory::desc(WeightDims(), dt, {o / groups, 1, o, kw * ci * o, ci * o});
  }
  // Kernel gradients are accumulated in f32 over the chunks, whatever the input type.
  memory::desc AnyWeights(ConvPass pass) const {
    auto t = pass == kBackwardWeights ? memory::data_type::f32 : dt;
    return memory::desc(WeightDims(), t, tag::any);
  }
};

// The geometry from the buffers' last 4 dimensions; `*copies` is the product of the
// leading (vmapped) ones, which all three buffers must share.
ffi::Error ReadGeom(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer y, const ConvAttrs& a,
                    ConvGeom* g, int64_t* copies) {
  *copies = Leading(x, 4);
  if (*copies < 1 || Leading(w, 4) != *copies || Leading(y, 4) != *copies ||
      x.dimensions().size() != w.dimensions().size() ||
      x.dimensions().size() != y.dimensions().size()) {
    return Fail("convolution expects NHWC activations and an HWIO kernel (with the same "
                "leading vmapped dimensions)");
  }
  auto xd = Trailing(x, 4), wd = Trailing(w, 4), yd = Trailing(y, 4);
  if (x.element_type() != w.element_type() || x.element_type() != y.element_type() ||
      !ToDnnl(x.element_type(), &g->dt)) {
    return Fail("convolution supports f32 and bf16 operands of one type");
  }
  g->n = xd[0]; g->h = xd[1]; g->w = xd[2]; g->c = xd[3];
  g->kh = wd[0]; g->kw = wd[1]; g->o = wd[3];
  g->oh = yd[1]; g->ow = yd[2];
  g->groups = a.groups;
  g->strides = {a.stride_h, a.stride_w};
  g->pad_l = {a.pad_top, a.pad_left};
  g->pad_r = {a.pad_bottom, a.pad_right};
  g->dilates = {a.dilation_h - 1, a.dilation_w - 1};
  if (g->groups < 1 || g->c % g->groups || g->o % g->groups || wd[2] * g->groups != g->c ||
      yd[0] != g->n || yd[3] != g->o) {
    return Fail("inconsistent convolution shapes or feature groups");
  }
  return ffi::Error::Success();
}

struct ConvEntry {
  dnnl::primitive prim;
  memory::desc scratchpad;
  memory::desc weights;  // the primitive's kernel layout
  dnnl::reorder weights_reorder;  // user -> primitive, or primitive -> user (gradient)
  memory::desc reorder_scratchpad;
};

template <typename Prim, typename Pd>
void SetPrim(ConvEntry* e, const Pd& pd, const memory::desc& weights) {
  e->prim = Prim(pd);
  e->scratchpad = pd.scratchpad_desc();
  e->weights = weights;
}

ConvEntry BuildConv(const ConvGeom& g, ConvPass pass, int64_t mb) {
  auto attr = UserScratchpad();
  dnnl::convolution_forward::primitive_desc fwd(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      g.Src(mb), g.AnyWeights(kForward), g.Dst(mb), g.strides, g.dilates, g.pad_l, g.pad_r,
      attr);
  ConvEntry e;
  if (pass == kForward) {
    SetPrim<dnnl::convolution_forward>(&e, fwd, fwd.weights_desc());
  } else if (pass == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, g.Src(mb), g.AnyWeights(pass),
        g.Dst(mb), g.strides, g.dilates, g.pad_l, g.pad_r, fwd, attr);
    SetPrim<dnnl::convolution_backward_data>(&e, pd, pd.weights_desc());
  } else {
    dnnl::convolution_backward_weights::primitive_desc pd(
        Engine(), dnnl::algorithm::convolution_direct, g.Src(mb), g.AnyWeights(pass),
        g.Dst(mb), g.strides, g.dilates, g.pad_l, g.pad_r, fwd, attr);
    SetPrim<dnnl::convolution_backward_weights>(&e, pd, pd.diff_weights_desc());
  }
  memory::desc user_w = g.UserWeights();
  auto rpd = pass == kBackwardWeights
                 ? dnnl::reorder::primitive_desc(Engine(), e.weights, Engine(), user_w, attr)
                 : dnnl::reorder::primitive_desc(Engine(), user_w, Engine(), e.weights, attr);
  e.weights_reorder = dnnl::reorder(rpd);
  e.reorder_scratchpad = rpd.scratchpad_desc();
  return e;
}

void Reorder(const ConvEntry& e, memory& from, memory& to) {
  memory scratch(e.reorder_scratchpad, Engine(), Scratch(e.reorder_scratchpad.get_size()));
  e.weights_reorder.execute(Stream(), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                                       {DNNL_ARG_SCRATCHPAD, scratch}});
}

// One pass over one (x, w, y) of the buffers: the chunks of the batch, each chunk's
// primitive, and the kernel in each primitive's layout (entries of equal chunk size
// share it) or, for the kernel gradient, each chunk's f32 part of it.
struct ConvPlan {
  std::vector<std::pair<int64_t, int64_t>> chunks;
  std::vector<std::shared_ptr<const ConvEntry>> entries;
  std::vector<char> wbuf;
  char* wbase;
  size_t wbytes;
  std::vector<memory> prim_w;
};

void Plan(ffi::ThreadPool& pool, ConvPass pass, const ConvGeom& g, memory& user_w,
          ConvPlan* p) {
  p->chunks = Chunks(g.n, Parts(pool));
  for (auto& [off, mb] : p->chunks) {
    p->entries.push_back(
        Cache<ConvEntry>::Global().Get(g.Key(pass, mb), [&] { return BuildConv(g, pass, mb); }));
  }
  p->wbytes = (p->entries[0]->weights.get_size() + 63) / 64 * 64;
  p->wbuf.resize(p->wbytes * p->chunks.size() + 64);
  p->wbase = reinterpret_cast<char*>(
      (reinterpret_cast<uintptr_t>(p->wbuf.data()) + 63) / 64 * 64);
  for (size_t i = 0; i < p->chunks.size(); ++i) {
    const bool same = i > 0 && p->entries[i]->weights == p->entries[i - 1]->weights;
    if (pass != kBackwardWeights && same) {
      p->prim_w.push_back(p->prim_w.back());
      continue;
    }
    p->prim_w.emplace_back(p->entries[i]->weights, Engine(), p->wbase + i * p->wbytes);
    if (pass != kBackwardWeights) Reorder(*p->entries[i], user_w, p->prim_w.back());
  }
}

// The primitive's arguments: `src` and `dst` are x and y, or their gradients.
std::unordered_map<int, memory> ConvArgs(ConvPass pass, const memory& src, const memory& w,
                                         const memory& dst, const memory& scratch) {
  if (pass == kForward) {
    return {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, dst},
            {DNNL_ARG_SCRATCHPAD, scratch}};
  }
  if (pass == kBackwardData) {
    return {{DNNL_ARG_DIFF_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_DST, dst},
            {DNNL_ARG_SCRATCHPAD, scratch}};
  }
  return {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_WEIGHTS, w}, {DNNL_ARG_DIFF_DST, dst},
          {DNNL_ARG_SCRATCHPAD, scratch}};
}

// Sums the chunks' kernel gradients into the first (all share one f32 layout), then
// writes it out as HWIO.
ffi::Error SumWeightGradients(ConvPlan& p, memory& user_w) {
  for (size_t i = 1; i < p.chunks.size(); ++i) {
    if (p.entries[i]->weights != p.entries[0]->weights) {
      return Fail("chunks chose different kernel-gradient layouts");
    }
  }
  const size_t count = p.entries[0]->weights.get_size() / sizeof(float);
  float* sum = reinterpret_cast<float*>(p.wbase);
  for (size_t i = 1; i < p.chunks.size(); ++i) {
    const float* part = reinterpret_cast<const float*>(p.wbase + i * p.wbytes);
    for (size_t k = 0; k < count; ++k) sum[k] += part[k];
  }
  Reorder(*p.entries[0], p.prim_w[0], user_w);
  Stream().wait();
  return ffi::Error::Success();
}

// One convolution pass on one (x, w, y) of pointers into the buffers.
ffi::Error RunConvOne(ffi::ThreadPool& pool, ConvPass pass, const ConvGeom& g, char* xp,
                      char* wp, char* yp) {
  try {
    memory user_w(g.UserWeights(), Engine(), wp);
    ConvPlan p;
    Plan(pool, pass, g, user_w, &p);
    ParallelFor(pool, p.chunks.size(), [&](int64_t i) {
      const auto& e = *p.entries[i];
      auto [off, mb] = p.chunks[i];
      memory src(g.Src(mb), Engine(), xp + off * g.SrcBytes(1));
      memory dst(g.Dst(mb), Engine(), yp + off * g.DstBytes(1));
      memory scratch(e.scratchpad, Engine(), Scratch(e.scratchpad.get_size()));
      e.prim.execute(Stream(), ConvArgs(pass, src, p.prim_w[i], dst, scratch));
      Stream().wait();
    });
    if (pass == kBackwardWeights) return SumWeightGradients(p, user_w);
  } catch (const dnnl::error& err) {
    return Fail(std::string("convolution: ") + err.what());
  }
  return ffi::Error::Success();
}

// One pass. `a` and `b` are the inputs, `out` the result:
//   forward:          a = x,  b = w,  out = y
//   backward data:    a = dy, b = w,  out = dx
//   backward weights: a = x,  b = dy, out = dw
ffi::Error RunConv(ffi::ThreadPool& pool, ConvPass pass, ffi::AnyBuffer a, ffi::AnyBuffer b,
                   ffi::AnyBuffer out, const ConvAttrs& attrs) {
  omp_set_num_threads(1);
  ConvGeom g;
  int64_t copies;
  ffi::AnyBuffer x = pass == kBackwardData ? out : a;
  ffi::AnyBuffer w = pass == kBackwardWeights ? out : b;
  ffi::AnyBuffer y = pass == kForward ? out : (pass == kBackwardData ? a : b);
  if (auto err = ReadGeom(x, w, y, attrs, &g, &copies); err.failure()) return err;
  const size_t xbytes = g.SrcBytes(g.n), ybytes = g.DstBytes(g.n);
  const size_t wbytes = w.size_bytes() / copies;
  for (int64_t i = 0; i < copies; ++i) {
    auto err = RunConvOne(pool, pass, g, static_cast<char*>(x.untyped_data()) + i * xbytes,
                          static_cast<char*>(w.untyped_data()) + i * wbytes,
                          static_cast<char*>(y.untyped_data()) + i * ybytes);
    if (err.failure()) return err;
  }
  return ffi::Error::Success();
}

// y = x * w; x is NHWC, w HWIO.
ffi::Error ConvForward(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w,
                       ffi::Result<ffi::AnyBuffer> y, ConvAttrs attrs) {
  HandlerTimer timer(kTimedConvForward);
  return RunConv(pool, kForward, x, w, *y, attrs);
}
// dx from the output's gradient dy and the kernel w.
ffi::Error ConvBackwardData(ffi::ThreadPool pool, ffi::AnyBuffer dy, ffi::AnyBuffer w,
                            ffi::Result<ffi::AnyBuffer> dx, ConvAttrs attrs) {
  HandlerTimer timer(kTimedConvBackwardData);
  return RunConv(pool, kBackwardData, dy, w, *dx, attrs);
}
// dw (HWIO) from the activations x and the output's gradient dy.
ffi::Error ConvBackwardWeights(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                               ffi::Result<ffi::AnyBuffer> dw, ConvAttrs attrs) {
  HandlerTimer timer(kTimedConvBackwardWeights);
  return RunConv(pool, kBackwardWeights, x, dy, *dw, attrs);
}

}  // namespace
}  // namespace cnn_cases

// The bindings follow the handlers' signatures: operands in order, then the window.
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnn_cases_conv_forward, cnn_cases::ConvForward);
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnn_cases_conv_backward_data, cnn_cases::ConvBackwardData);
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnn_cases_conv_backward_weights, cnn_cases::ConvBackwardWeights);
