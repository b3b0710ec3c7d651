// oneDNN convolution and batch normalisation as XLA FFI handlers for the CPU.
//
// Layouts are the models' own: activations NHWC, kernels HWIO (grouped kernels
// HW(I/G)O, output channels group-major, as lax.conv_general_dilated). Activations
// are used in place; kernels are reordered into the layout the primitive prefers
// (format_tag::any), because plain HWIO sends both backward passes to a slow
// gemm-based implementation.
//
// Threads: the work runs on XLA's own intra-op thread pool, never on OpenMP teams
// beside it (on a small machine the two oversubscribe the cores and a team barrier
// waits for a descheduled thread). The batch is split into one chunk per pool
// thread; each chunk runs a single-threaded oneDNN primitive. The caller takes
// chunks too and only ever waits for chunks that another thread has started, so a
// busy pool slows a call down but cannot deadlock it.
//
// BatchNorm: the statistics and the backward pass need sums over the whole batch,
// which oneDNN's primitive only computes inside one call; here each chunk sums its
// part (in double) and the normalisation itself runs on oneDNN's inference
// primitive with the batch statistics (fused with the ReLU). The residual block's
// end, relu(bn(x) + r), and the backward pass are loops of this file, compiled for
// AVX-512, AVX2 and a baseline, with the common channel counts fixed at compile time.
//
// vmap: every buffer may carry extra leading dimensions, the same on all of a call's
// buffers (jax.ffi's "broadcast_all"); the handler runs its operation once per index of
// them, on the buffers' slices in place (e.g. the seeds of `train_seeds`, each with its
// own kernel, batch and statistics).
//
// Primitives are created once per shape and kept in a cache.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

extern "C" void omp_set_num_threads(int);  // libgomp, which libdnnl links

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

ffi::Error Fail(const std::string& what) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "cnn_cases oneDNN: " + what);
}

bool ToDnnl(ffi::DataType t, memory::data_type* out) {
  switch (t) {
    case ffi::DataType::F32: *out = memory::data_type::f32; return true;
    case ffi::DataType::BF16: *out = memory::data_type::bf16; return true;
    default: return false;
  }
}

// The product of a buffer's dimensions before its last `rank` (1 if none), or -1 if it
// has fewer than `rank`.
int64_t Leading(ffi::AnyBuffer b, size_t rank) {
  auto d = b.dimensions();
  if (d.size() < rank) return -1;
  int64_t n = 1;
  for (size_t i = 0; i + rank < d.size(); ++i) n *= d[i];
  return n;
}

// A buffer's last `rank` dimensions.
std::vector<int64_t> Trailing(ffi::AnyBuffer b, size_t rank) {
  auto d = b.dimensions();
  return std::vector<int64_t>(d.begin() + (d.size() - rank), d.end());
}

// Grow-only per-thread scratch buffer, 64-byte aligned.
char* Scratch(size_t bytes) {
  thread_local std::vector<char> buf;
  if (buf.size() < bytes + 64) buf.resize(bytes + 64);
  return reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) / 64 * 64);
}

// Runs fn(i) for i in [0, n) on the calling thread and up to n - 1 pool threads, each
// with single-threaded oneDNN. Returns when all n are done.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const std::function<void(int64_t)>& fn) {
  struct State {
    std::atomic<int64_t> next{0};
    int64_t done = 0;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto st = std::make_shared<State>();
  const std::function<void(int64_t)>* f = &fn;
  auto work = [st, n, f] {
    omp_set_num_threads(1);
    int64_t mine = 0;
    for (int64_t i; (i = st->next.fetch_add(1)) < n; ++mine) (*f)(i);
    if (mine) {
      std::lock_guard<std::mutex> lock(st->mu);
      st->done += mine;
      if (st->done == n) st->cv.notify_all();
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n - 1);
  for (int64_t i = 0; i < helpers; ++i) {
    auto task = work;
    pool.Schedule(std::move(task));
  }
  work();
  std::unique_lock<std::mutex> lock(st->mu);
  st->cv.wait(lock, [&] { return st->done == n; });
}

// Splits a batch of n into chunks: (offset, size) pairs, at most `parts` of them, with at
// most two distinct sizes.
std::vector<std::pair<int64_t, int64_t>> Chunks(int64_t n, int64_t parts) {
  parts = std::max<int64_t>(1, std::min(parts, n));
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t i = 0, off = 0; i < parts; ++i) {
    int64_t size = n / parts + (i < n % parts);
    out.push_back({off, size});
    off += size;
  }
  return out;
}

int64_t Parts(ffi::ThreadPool& pool) { return std::max<int64_t>(1, pool.num_threads()); }

// A cache of built primitives keyed by the raw bytes of a vector of integers.
template <typename Entry>
class Cache {
 public:
  template <typename Build>
  std::shared_ptr<const Entry> Get(const std::vector<int64_t>& key, Build build) {
    std::string k(reinterpret_cast<const char*>(key.data()), key.size() * sizeof(int64_t));
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(k);
      if (it != map_.end()) return it->second;
    }
    omp_set_num_threads(1);  // primitives are built for the single thread that runs them
    auto entry = std::make_shared<const Entry>(build());
    std::lock_guard<std::mutex> lock(mu_);
    return map_.emplace(k, entry).first->second;
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const Entry>> map_;
};

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::stream& Stream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

// ---------------------------------------------------------------------------
// Convolution
// ---------------------------------------------------------------------------

enum ConvPass : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// Geometry of one convolution, read from the buffers and the `params` attribute
// [stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, dil_h, dil_w, groups].
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
ffi::Error ReadGeom(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer y,
                    ffi::Span<const int64_t> p, ConvGeom* g, int64_t* copies) {
  *copies = Leading(x, 4);
  if (*copies < 1 || Leading(w, 4) != *copies || Leading(y, 4) != *copies ||
      x.dimensions().size() != w.dimensions().size() ||
      x.dimensions().size() != y.dimensions().size() || p.size() != 9) {
    return Fail("convolution expects NHWC activations, an HWIO kernel (with the same leading "
                "vmapped dimensions) and 9 parameters");
  }
  auto xd = Trailing(x, 4), wd = Trailing(w, 4), yd = Trailing(y, 4);
  if (x.element_type() != w.element_type() || x.element_type() != y.element_type() ||
      !ToDnnl(x.element_type(), &g->dt)) {
    return Fail("convolution supports f32 and bf16 operands of one type");
  }
  g->n = xd[0]; g->h = xd[1]; g->w = xd[2]; g->c = xd[3];
  g->kh = wd[0]; g->kw = wd[1]; g->o = wd[3];
  g->oh = yd[1]; g->ow = yd[2];
  g->groups = p[8];
  g->strides = {p[0], p[1]};
  g->pad_l = {p[2], p[4]};
  g->pad_r = {p[3], p[5]};
  g->dilates = {p[6] - 1, p[7] - 1};
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

Cache<ConvEntry>& ConvCache() {
  static Cache<ConvEntry> cache;
  return cache;
}

void Reorder(const ConvEntry& e, memory& from, memory& to) {
  memory scratch(e.reorder_scratchpad, Engine(), Scratch(e.reorder_scratchpad.get_size()));
  e.weights_reorder.execute(Stream(), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                                       {DNNL_ARG_SCRATCHPAD, scratch}});
}

// One pass. `a` and `b` are the inputs, `out` the result:
//   forward:          a = x,  b = w,  out = y
//   backward data:    a = dy, b = w,  out = dx
//   backward weights: a = x,  b = dy, out = dw
ffi::Error RunConvOne(ffi::ThreadPool& pool, ConvPass pass, const ConvGeom& g, char* xp,
                      char* wp, char* yp);

ffi::Error RunConv(ffi::ThreadPool& pool, ConvPass pass, ffi::AnyBuffer a, ffi::AnyBuffer b,
                   ffi::AnyBuffer out, ffi::Span<const int64_t> params) {
  omp_set_num_threads(1);
  ConvGeom g;
  int64_t copies;
  ffi::AnyBuffer x = pass == kBackwardData ? out : a;
  ffi::AnyBuffer w = pass == kBackwardWeights ? out : b;
  ffi::AnyBuffer y = pass == kForward ? out : (pass == kBackwardData ? a : b);
  if (auto err = ReadGeom(x, w, y, params, &g, &copies); err.failure()) return err;
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

// One convolution pass on one (x, w, y) of pointers into the buffers.
ffi::Error RunConvOne(ffi::ThreadPool& pool, ConvPass pass, const ConvGeom& g, char* xp,
                      char* wp, char* yp) {
  try {
    auto chunks = Chunks(g.n, Parts(pool));
    std::vector<std::shared_ptr<const ConvEntry>> entries;
    for (auto& [off, mb] : chunks) {
      entries.push_back(ConvCache().Get(g.Key(pass, mb), [&] { return BuildConv(g, pass, mb); }));
    }
    auto& eng = Engine();
    memory user_w(g.UserWeights(), eng, wp);
    // The kernel in each entry's layout (entries of equal chunk size share it), or the
    // chunks' f32 kernel gradients.
    const size_t wbytes = (entries[0]->weights.get_size() + 63) / 64 * 64;
    std::vector<char> wbuf(wbytes * chunks.size() + 64);
    char* wbase = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(wbuf.data()) + 63) / 64 * 64);
    std::vector<memory> prim_w;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const bool same = i > 0 && entries[i]->weights == entries[i - 1]->weights;
      if (pass != kBackwardWeights && same) {
        prim_w.push_back(prim_w.back());
        continue;
      }
      prim_w.emplace_back(entries[i]->weights, eng, wbase + i * wbytes);
      if (pass != kBackwardWeights) Reorder(*entries[i], user_w, prim_w.back());
    }
    ParallelFor(pool, chunks.size(), [&](int64_t i) {
      const auto& e = *entries[i];
      auto [off, mb] = chunks[i];
      memory src(g.Src(mb), eng, xp + off * g.SrcBytes(1));
      memory dst(g.Dst(mb), eng, yp + off * g.DstBytes(1));
      memory scratch(e.scratchpad, eng, Scratch(e.scratchpad.get_size()));
      if (pass == kForward) {
        e.prim.execute(Stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, prim_w[i]},
                                  {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
      } else if (pass == kBackwardData) {
        e.prim.execute(Stream(), {{DNNL_ARG_DIFF_SRC, src}, {DNNL_ARG_WEIGHTS, prim_w[i]},
                                  {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
      } else {
        e.prim.execute(Stream(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_WEIGHTS, prim_w[i]},
                                  {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
      }
      Stream().wait();
    });
    if (pass == kBackwardWeights) {
      // Sum the chunks' gradients into the first (all share one f32 layout), then write
      // it out as HWIO.
      for (size_t i = 1; i < chunks.size(); ++i) {
        if (entries[i]->weights != entries[0]->weights) {
          return Fail("chunks chose different kernel-gradient layouts");
        }
      }
      const size_t count = entries[0]->weights.get_size() / sizeof(float);
      float* sum = reinterpret_cast<float*>(wbase);
      for (size_t i = 1; i < chunks.size(); ++i) {
        const float* part = reinterpret_cast<const float*>(wbase + i * wbytes);
        for (size_t k = 0; k < count; ++k) sum[k] += part[k];
      }
      Reorder(*entries[0], prim_w[0], user_w);
      Stream().wait();
    }
  } catch (const dnnl::error& err) {
    return Fail(std::string("convolution: ") + err.what());
  }
  return ffi::Error::Success();
}

ffi::Error ConvForward(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w,
                       ffi::Result<ffi::AnyBuffer> y, ffi::Span<const int64_t> params) {
  return RunConv(pool, kForward, x, w, *y, params);
}
ffi::Error ConvBackwardData(ffi::ThreadPool pool, ffi::AnyBuffer dy, ffi::AnyBuffer w,
                            ffi::Result<ffi::AnyBuffer> dx, ffi::Span<const int64_t> params) {
  return RunConv(pool, kBackwardData, dy, w, *dx, params);
}
ffi::Error ConvBackwardWeights(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                               ffi::Result<ffi::AnyBuffer> dw, ffi::Span<const int64_t> params) {
  return RunConv(pool, kBackwardWeights, x, dy, *dw, params);
}

// ---------------------------------------------------------------------------
// Batch normalisation over N, H, W of an NHWC tensor; scale, shift, mean and
// variance are f32 vectors of C. `relu` applies a ReLU to the output (forward)
// and masks the gradient with y > 0 (backward). `add` (with `relu`) adds a
// residual tensor before the ReLU, the end of a residual block: y = relu(bn(x) + r);
// its gradient is the masked dy, which the backward pass writes out.
// ---------------------------------------------------------------------------

inline float Load(const float* p, int64_t i) { return p[i]; }
inline float Load(const uint16_t* p, int64_t i) {
  uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
inline void Store(float* p, int64_t i, float v) { p[i] = v; }
inline void Store(uint16_t* p, int64_t i, float v) {  // round to nearest even
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu)) {
    p[i] = static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
    return;
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  p[i] = static_cast<uint16_t>(bits >> 16);
}

// Per-channel sums over `rows` rows of C values: s1 += x, s2 += x^2 (or, with dy, the
// backward sums s1 += dy', s2 += dy' * (x - mean), dy' being dy masked by y > 0 if relu).
// Blocks of rows are summed in f32, the blocks in double.
// C > 0 fixes the channel count at compile time, so that the accumulators of the common
// widths live in vector registers.
template <typename T, int64_t C>
__attribute__((target_clones("avx512f", "avx2", "default"))) void ChannelSums(
    const T* __restrict x, const T* __restrict dy, const T* __restrict y,
    const float* __restrict mean, int64_t rows, int64_t runtime_c, bool relu,
    double* __restrict s1, double* __restrict s2) {
  const int64_t c = C > 0 ? C : runtime_c;
  constexpr int64_t kBlock = 64;
  std::vector<float> b1(c), b2(c);
  float* __restrict f1 = b1.data();
  float* __restrict f2 = b2.data();
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    std::fill(b1.begin(), b1.end(), 0.0f);
    std::fill(b2.begin(), b2.end(), 0.0f);
    const int64_t r1 = std::min(rows, r0 + kBlock);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t base = r * c;
      if (dy == nullptr) {
        for (int64_t k = 0; k < c; ++k) {
          const float v = Load(x, base + k);
          f1[k] += v;
          f2[k] += v * v;
        }
      } else if (relu) {
        for (int64_t k = 0; k < c; ++k) {
          const float dyk = Load(dy, base + k);  // loaded unconditionally: a select, no branch
        const float g = Load(y, base + k) > 0.0f ? dyk : 0.0f;
          f1[k] += g;
          f2[k] += g * (Load(x, base + k) - mean[k]);
        }
      } else {
        for (int64_t k = 0; k < c; ++k) {
          const float g = Load(dy, base + k);
          f1[k] += g;
          f2[k] += g * (Load(x, base + k) - mean[k]);
        }
      }
    }
    for (int64_t k = 0; k < c; ++k) {
      s1[k] += f1[k];
      s2[k] += f2[k];
    }
  }
}

// dx = dy' * a[c] + (x - mean[c]) * b[c] + d[c], the training-mode BatchNorm gradient.
template <typename T, int64_t C>
__attribute__((target_clones("avx512f", "avx2", "default"))) void BackwardRows(
    const T* __restrict x, const T* __restrict dy, const T* __restrict y, T* __restrict dx,
    const float* __restrict mean, const float* __restrict a, const float* __restrict b,
    const float* __restrict d, T* __restrict dres, int64_t rows, int64_t runtime_c, bool relu) {
  const int64_t c = C > 0 ? C : runtime_c;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * c;
    if (relu) {
      for (int64_t k = 0; k < c; ++k) {
        const float dyk = Load(dy, base + k);  // loaded unconditionally: a select, no branch
        const float g = Load(y, base + k) > 0.0f ? dyk : 0.0f;
        Store(dx, base + k, g * a[k] + (Load(x, base + k) - mean[k]) * b[k] + d[k]);
        if (dres != nullptr) Store(dres, base + k, g);
      }
    } else {
      for (int64_t k = 0; k < c; ++k) {
        Store(dx, base + k,
              Load(dy, base + k) * a[k] + (Load(x, base + k) - mean[k]) * b[k] + d[k]);
      }
    }
  }
}

// y = max(0, x * a[c] + b[c] + r): BatchNorm with given statistics, plus a residual, then
// ReLU (oneDNN 3.2 has no inference primitive for fuse_norm_add_relu).
template <typename T, int64_t C>
__attribute__((target_clones("avx512f", "avx2", "default"))) void AddReluRows(
    const T* __restrict x, const T* __restrict r, T* __restrict y, const float* __restrict a,
    const float* __restrict b, int64_t rows, int64_t runtime_c) {
  const int64_t c = C > 0 ? C : runtime_c;
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t base = row * c;
    for (int64_t k = 0; k < c; ++k) {
      const float v = Load(x, base + k) * a[k] + b[k] + Load(r, base + k);
      Store(y, base + k, v > 0.0f ? v : 0.0f);
    }
  }
}

// Calls Kernel<T, C> with C the compile-time twin of `c` where there is one, else 0.
#define CNN_CASES_DISPATCH_C(Kernel, T, c, ...)                 \
  switch (c) {                                                  \
    case 16: Kernel<T, 16>(__VA_ARGS__); break;                 \
    case 32: Kernel<T, 32>(__VA_ARGS__); break;                 \
    case 64: Kernel<T, 64>(__VA_ARGS__); break;                 \
    case 128: Kernel<T, 128>(__VA_ARGS__); break;               \
    default: Kernel<T, 0>(__VA_ARGS__); break;                  \
  }

struct BnEntry {
  dnnl::primitive prim;
  memory::desc data, stats, scratchpad;
};

// oneDNN's inference BatchNorm (given statistics) on a chunk of mb images.
BnEntry BuildBnInference(memory::data_type dt, int64_t mb, int64_t h, int64_t w, int64_t c,
                         float eps, bool relu) {
  BnEntry e;
  e.data = memory::desc({mb, c, h, w}, dt, tag::nhwc);
  e.stats = memory::desc({c}, memory::data_type::f32, tag::a);
  auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift |
               dnnl::normalization_flags::use_global_stats;
  if (relu) flags |= dnnl::normalization_flags::fuse_norm_relu;
  dnnl::batch_normalization_forward::primitive_desc pd(
      Engine(), dnnl::prop_kind::forward_inference, e.data, e.data, eps, flags,
      UserScratchpad());
  e.prim = dnnl::batch_normalization_forward(pd);
  e.scratchpad = pd.scratchpad_desc();
  return e;
}

Cache<BnEntry>& BnCache() {
  static Cache<BnEntry> cache;
  return cache;
}

struct BnShape {
  int64_t n, h, w, c;
  memory::data_type dt;
  size_t elem;
};

// The shape from x's last 4 dimensions; `*copies` is the product of its leading (vmapped)
// ones, which every other buffer of the call must have too.
ffi::Error ReadBnShape(ffi::AnyBuffer x, std::initializer_list<ffi::AnyBuffer> others,
                       BnShape* s, int64_t* copies) {
  *copies = Leading(x, 4);
  if (*copies < 1 || !ToDnnl(x.element_type(), &s->dt)) {
    return Fail("batch norm expects an NHWC f32 or bf16 tensor");
  }
  for (const auto& b : others) {
    if (Leading(b, 1) % *copies || b.size_bytes() % *copies) {
      return Fail("batch norm buffers with different leading (vmapped) dimensions");
    }
  }
  auto d = Trailing(x, 4);
  s->n = d[0]; s->h = d[1]; s->w = d[2]; s->c = d[3];
  s->elem = s->dt == memory::data_type::f32 ? 4 : 2;
  return ffi::Error::Success();
}

// Copy i of a buffer that holds `copies` equal-sized copies (one per vmapped index).
char* At(ffi::AnyBuffer b, int64_t copies, int64_t i) {
  return static_cast<char*>(b.untyped_data()) + i * (b.size_bytes() / copies);
}

// y = relu?((x - mean) / sqrt(var + eps) * scale + shift [+ residual]), chunk by chunk on
// oneDNN; `residual` is null unless `add`.
void Normalize(ffi::ThreadPool& pool, const BnShape& s, void* x, void* y, void* scale,
               void* shift, void* mean, void* var, float eps, bool relu, void* residual) {
  auto chunks = Chunks(s.n, Parts(pool));
  if (residual != nullptr) {
    std::vector<float> a(s.c), b(s.c);
    const float* sc = static_cast<const float*>(scale);
    const float* sh = static_cast<const float*>(shift);
    const float* m = static_cast<const float*>(mean);
    const float* v = static_cast<const float*>(var);
    for (int64_t k = 0; k < s.c; ++k) {
      a[k] = sc[k] / std::sqrt(v[k] + eps);
      b[k] = sh[k] - m[k] * a[k];
    }
    const int64_t per_image = s.h * s.w;
    ParallelFor(pool, chunks.size(), [&](int64_t i) {
      const int64_t off = chunks[i].first * per_image * s.c;
      const int64_t rows = chunks[i].second * per_image;
      if (s.dt == memory::data_type::f32) {
        CNN_CASES_DISPATCH_C(AddReluRows, float, s.c, static_cast<const float*>(x) + off,
                             static_cast<const float*>(residual) + off,
                             static_cast<float*>(y) + off, a.data(), b.data(), rows, s.c);
      } else {
        CNN_CASES_DISPATCH_C(AddReluRows, uint16_t, s.c, static_cast<const uint16_t*>(x) + off,
                             static_cast<const uint16_t*>(residual) + off,
                             static_cast<uint16_t*>(y) + off, a.data(), b.data(), rows, s.c);
      }
    });
    return;
  }
  std::vector<std::shared_ptr<const BnEntry>> entries;
  for (auto& [off, mb] : chunks) {
    int32_t eps_bits;
    std::memcpy(&eps_bits, &eps, sizeof(eps));
    std::vector<int64_t> key = {static_cast<int64_t>(s.dt), mb, s.h, s.w, s.c, eps_bits, relu};
    entries.push_back(
        BnCache().Get(key, [&] { return BuildBnInference(s.dt, mb, s.h, s.w, s.c, eps, relu); }));
  }
  const size_t image = s.h * s.w * s.c * s.elem;
  ParallelFor(pool, chunks.size(), [&](int64_t i) {
    const auto& e = *entries[i];
    auto& eng = Engine();
    const int64_t off = chunks[i].first;
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, memory(e.data, eng, static_cast<char*>(x) + off * image)},
        {DNNL_ARG_DST, memory(e.data, eng, static_cast<char*>(y) + off * image)},
        {DNNL_ARG_SCALE, memory(e.stats, eng, scale)},
        {DNNL_ARG_SHIFT, memory(e.stats, eng, shift)},
        {DNNL_ARG_MEAN, memory(e.stats, eng, mean)},
        {DNNL_ARG_VARIANCE, memory(e.stats, eng, var)},
        {DNNL_ARG_SCRATCHPAD, memory(e.scratchpad, eng, Scratch(e.scratchpad.get_size()))}};
    e.prim.execute(Stream(), args);
    Stream().wait();
  });
}

// Per-channel sums over the batch, chunk by chunk: returns (s1, s2) each of C doubles.
template <typename T>
std::pair<std::vector<double>, std::vector<double>> BatchSums(ffi::ThreadPool& pool,
                                                              const BnShape& s, const T* x,
                                                              const T* dy, const T* y,
                                                              const float* mean, bool relu) {
  auto chunks = Chunks(s.n, Parts(pool));
  const int64_t rows_per_image = s.h * s.w;
  std::vector<std::vector<double>> p1(chunks.size(), std::vector<double>(s.c)),
      p2(chunks.size(), std::vector<double>(s.c));
  ParallelFor(pool, chunks.size(), [&](int64_t i) {
    const int64_t off = chunks[i].first * rows_per_image * s.c;
    CNN_CASES_DISPATCH_C(ChannelSums, T, s.c, x + off, dy ? dy + off : nullptr,
                         y ? y + off : nullptr, mean, chunks[i].second * rows_per_image, s.c,
                         relu, p1[i].data(), p2[i].data());
  });
  std::vector<double> s1(s.c), s2(s.c);
  for (size_t i = 0; i < chunks.size(); ++i) {
    for (int64_t k = 0; k < s.c; ++k) {
      s1[k] += p1[i][k];
      s2[k] += p2[i][k];
    }
  }
  return {s1, s2};
}

template <typename T>
void BnStats(ffi::ThreadPool& pool, const BnShape& s, const T* x, float* mean, float* var) {
  auto [s1, s2] = BatchSums<T>(pool, s, x, nullptr, nullptr, nullptr, false);
  const double count = static_cast<double>(s.n) * s.h * s.w;
  for (int64_t k = 0; k < s.c; ++k) {
    const double m = s1[k] / count;
    mean[k] = static_cast<float>(m);
    var[k] = static_cast<float>(std::max(0.0, s2[k] / count - m * m));
  }
}

template <typename T>
void BnBackwardT(ffi::ThreadPool& pool, const BnShape& s, const T* x, const T* dy, const T* y,
                 const float* scale, const float* mean, const float* var, T* dx, float* dscale,
                 float* dshift, T* dres, float eps, bool relu) {
  auto [s1, s2] = BatchSums<T>(pool, s, x, dy, y, mean, relu);
  const double count = static_cast<double>(s.n) * s.h * s.w;
  std::vector<float> a(s.c), b(s.c), d(s.c);
  for (int64_t k = 0; k < s.c; ++k) {
    const double rstd = 1.0 / std::sqrt(static_cast<double>(var[k]) + eps);
    dshift[k] = static_cast<float>(s1[k]);
    dscale[k] = static_cast<float>(s2[k] * rstd);
    // dx = scale * rstd * (dy' - mean(dy') - xhat * mean(dy' * xhat))
    a[k] = static_cast<float>(scale[k] * rstd);
    b[k] = static_cast<float>(-scale[k] * rstd * rstd * rstd * s2[k] / count);
    d[k] = static_cast<float>(-scale[k] * rstd * s1[k] / count);
  }
  auto chunks = Chunks(s.n, Parts(pool));
  const int64_t rows_per_image = s.h * s.w;
  ParallelFor(pool, chunks.size(), [&](int64_t i) {
    const int64_t off = chunks[i].first * rows_per_image * s.c;
    CNN_CASES_DISPATCH_C(BackwardRows, T, s.c, x + off, dy + off, y ? y + off : nullptr,
                         dx + off, mean, a.data(), b.data(), d.data(),
                         dres ? dres + off : nullptr, chunks[i].second * rows_per_image, s.c,
                         relu);
  });
}

// `residual` is read only when `add`.
ffi::Error BnTrain(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer scale,
                   ffi::AnyBuffer shift, ffi::AnyBuffer residual, ffi::Result<ffi::AnyBuffer> y,
                   ffi::Result<ffi::AnyBuffer> mean, ffi::Result<ffi::AnyBuffer> var, float eps,
                   bool relu, bool add) {
  omp_set_num_threads(1);
  BnShape s;
  int64_t n;
  if (auto err = ReadBnShape(x, {scale, shift, residual, *y, *mean, *var}, &s, &n);
      err.failure()) {
    return err;
  }
  try {
    for (int64_t i = 0; i < n; ++i) {
      float* m = reinterpret_cast<float*>(At(*mean, n, i));
      float* v = reinterpret_cast<float*>(At(*var, n, i));
      if (s.dt == memory::data_type::f32) {
        BnStats<float>(pool, s, reinterpret_cast<const float*>(At(x, n, i)), m, v);
      } else {
        BnStats<uint16_t>(pool, s, reinterpret_cast<const uint16_t*>(At(x, n, i)), m, v);
      }
      Normalize(pool, s, At(x, n, i), At(*y, n, i), At(scale, n, i), At(shift, n, i), m, v,
                eps, relu, add ? At(residual, n, i) : nullptr);
    }
  } catch (const dnnl::error& err) {
    return Fail(std::string("batch norm: ") + err.what());
  }
  return ffi::Error::Success();
}

ffi::Error BnInference(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer scale,
                       ffi::AnyBuffer shift, ffi::AnyBuffer mean, ffi::AnyBuffer var,
                       ffi::AnyBuffer residual, ffi::Result<ffi::AnyBuffer> y, float eps,
                       bool relu, bool add) {
  omp_set_num_threads(1);
  BnShape s;
  int64_t n;
  if (auto err = ReadBnShape(x, {scale, shift, mean, var, residual, *y}, &s, &n);
      err.failure()) {
    return err;
  }
  try {
    for (int64_t i = 0; i < n; ++i) {
      Normalize(pool, s, At(x, n, i), At(*y, n, i), At(scale, n, i), At(shift, n, i),
                At(mean, n, i), At(var, n, i), eps, relu, add ? At(residual, n, i) : nullptr);
    }
  } catch (const dnnl::error& err) {
    return Fail(std::string("batch norm: ") + err.what());
  }
  return ffi::Error::Success();
}

// `y` is the forward output, read only when `relu` (for its mask); `dres`, the residual's
// gradient, is written only when `add`.
ffi::Error BnBackward(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer dy,
                      ffi::AnyBuffer y, ffi::AnyBuffer scale, ffi::AnyBuffer mean,
                      ffi::AnyBuffer var, ffi::Result<ffi::AnyBuffer> dx,
                      ffi::Result<ffi::AnyBuffer> dscale, ffi::Result<ffi::AnyBuffer> dshift,
                      ffi::Result<ffi::AnyBuffer> dres, float eps, bool relu, bool add) {
  BnShape s;
  int64_t n;
  if (auto err = ReadBnShape(x, {dy, y, scale, mean, var, *dx, *dscale, *dshift, *dres}, &s, &n);
      err.failure()) {
    return err;
  }
  if (add && !relu) return Fail("a fused residual addition needs the fused ReLU");
  for (int64_t i = 0; i < n; ++i) {
    auto f = [&](ffi::AnyBuffer b) { return reinterpret_cast<float*>(At(b, n, i)); };
    if (s.dt == memory::data_type::f32) {
      BnBackwardT<float>(pool, s, f(x), f(dy), relu ? f(y) : nullptr, f(scale), f(mean),
                         f(var), f(*dx), f(*dscale), f(*dshift), add ? f(*dres) : nullptr, eps,
                         relu);
    } else {
      auto t = [&](ffi::AnyBuffer b) { return reinterpret_cast<uint16_t*>(At(b, n, i)); };
      BnBackwardT<uint16_t>(pool, s, t(x), t(dy), relu ? t(y) : nullptr, f(scale), f(mean),
                            f(var), t(*dx), f(*dscale), f(*dshift), add ? t(*dres) : nullptr,
                            eps, relu);
    }
  }
  return ffi::Error::Success();
}

}  // namespace

// Handlers, exported for jax.ffi.register_ffi_target through ctypes.
#define CNN_CASES_EXPORT extern "C" __attribute__((visibility("default")))
// XLA_FFI_DEFINE_HANDLER_SYMBOL defines an extern "C" function; declaring it first
// gives it default visibility under -fvisibility=hidden.
#define CNN_CASES_HANDLER(name, fn, binding)                     \
  CNN_CASES_EXPORT XLA_FFI_Error* name(XLA_FFI_CallFrame* frame); \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, fn, binding);

#define CONV_BINDING                       \
  ffi::Ffi::Bind()                         \
      .Ctx<ffi::ThreadPool>()              \
      .Arg<ffi::AnyBuffer>()               \
      .Arg<ffi::AnyBuffer>()               \
      .Ret<ffi::AnyBuffer>()               \
      .Attr<ffi::Span<const int64_t>>("params")

CNN_CASES_HANDLER(cnn_cases_conv_forward, ConvForward, CONV_BINDING)
CNN_CASES_HANDLER(cnn_cases_conv_backward_data, ConvBackwardData, CONV_BINDING)
CNN_CASES_HANDLER(cnn_cases_conv_backward_weights, ConvBackwardWeights, CONV_BINDING)

CNN_CASES_HANDLER(cnn_cases_bn_train, BnTrain,
                  ffi::Ffi::Bind()
                      .Ctx<ffi::ThreadPool>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Ret<ffi::AnyBuffer>()
                      .Ret<ffi::AnyBuffer>()
                      .Ret<ffi::AnyBuffer>()
                      .Attr<float>("eps")
                      .Attr<bool>("relu")
                      .Attr<bool>("add"))

CNN_CASES_HANDLER(cnn_cases_bn_inference, BnInference,
                  ffi::Ffi::Bind()
                      .Ctx<ffi::ThreadPool>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Ret<ffi::AnyBuffer>()
                      .Attr<float>("eps")
                      .Attr<bool>("relu")
                      .Attr<bool>("add"))

CNN_CASES_HANDLER(cnn_cases_bn_backward, BnBackward,
                  ffi::Ffi::Bind()
                      .Ctx<ffi::ThreadPool>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Arg<ffi::AnyBuffer>()
                      .Ret<ffi::AnyBuffer>()
                      .Ret<ffi::AnyBuffer>()
                      .Ret<ffi::AnyBuffer>()
                      .Ret<ffi::AnyBuffer>()
                      .Attr<float>("eps")
                      .Attr<bool>("relu")
                      .Attr<bool>("add"))

// The handlers' interface version; the Python side refuses a stale build.
CNN_CASES_EXPORT int64_t cnn_cases_abi_version() { return 4; }

// oneDNN's version, major * 10000 + minor * 100 + patch.
CNN_CASES_EXPORT int64_t cnn_cases_onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}
