// What the oneDNN handlers share: the engine and streams, the thread pool's chunked loop,
// the primitive cache, buffer shapes, the element types and the library's target table.
//
// Threads: the work runs on XLA's own intra-op thread pool, never on OpenMP teams
// beside it (on a small machine the two oversubscribe the cores and a team barrier
// waits for a descheduled thread). The batch is split into one chunk per pool
// thread; each chunk runs a single-threaded oneDNN primitive. The caller takes
// chunks too and only ever waits for chunks that another thread has started, so a
// busy pool slows a call down but cannot deadlock it.
//
// vmap: every buffer may carry extra leading dimensions, the same on all of a call's
// buffers (jax.ffi's "broadcast_all"); a handler runs its operation once per index of
// them, on the buffers' slices in place (e.g. the seeds of one `train.train` run, each with its
// own kernel, batch and statistics).
//
// Primitives are created once per shape and kept in a cache.

#ifndef CNN_CASES_KERNELS_ONEDNN_COMMON_H_
#define CNN_CASES_KERNELS_ONEDNN_COMMON_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

extern "C" void omp_set_num_threads(int);  // libgomp, which libdnnl links

// The library's C interface, read by cnn_cases.kernels.library through ctypes.
#define CNN_CASES_EXPORT extern "C" __attribute__((visibility("default")))

namespace cnn_cases {

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

dnnl::engine& Engine();
// The calling thread's stream on Engine().
dnnl::stream& Stream();

ffi::Error Fail(const std::string& what);

// Primitive attributes with the scratchpad passed in by the caller (from Scratch).
dnnl::primitive_attr UserScratchpad();

// Grow-only per-thread scratch buffer, 64-byte aligned.
char* Scratch(size_t bytes);

// ---------------------------------------------------------------------------
// Element types: f32, and bf16 held as its 16 bits.
// ---------------------------------------------------------------------------

using Bf16Bits = uint16_t;

// oneDNN's name for an f32 or bf16 buffer's element type; false for any other.
bool ToDnnl(ffi::DataType t, memory::data_type* out);

// Returns fn(T{}) with T the C++ type of `t` (float or Bf16Bits), or an error for any
// other element type.
template <typename Fn>
ffi::Error WithElementType(ffi::DataType t, const std::string& op, Fn&& fn) {
  switch (t) {
    case ffi::DataType::F32: return fn(float{});
    case ffi::DataType::BF16: return fn(Bf16Bits{});
    default: return Fail(op + " supports f32 and bf16 tensors");
  }
}

// ---------------------------------------------------------------------------
// Buffers with leading (vmapped) dimensions.
// ---------------------------------------------------------------------------

// The product of a buffer's dimensions before its last `rank` (1 if none), or -1 if it
// has fewer than `rank`.
template <typename Buffer>
int64_t Leading(const Buffer& b, size_t rank) {
  auto d = b.dimensions();
  if (d.size() < rank) return -1;
  int64_t n = 1;
  for (size_t i = 0; i + rank < d.size(); ++i) n *= d[i];
  return n;
}

// A buffer's last `rank` dimensions.
template <typename Buffer>
std::vector<int64_t> Trailing(const Buffer& b, size_t rank) {
  auto d = b.dimensions();
  return std::vector<int64_t>(d.begin() + (d.size() - rank), d.end());
}

// Copy i of a buffer that holds `copies` equal-sized copies (one per vmapped index).
template <typename T, typename Buffer>
T* At(const Buffer& b, int64_t copies, int64_t i) {
  return reinterpret_cast<T*>(static_cast<char*>(b.untyped_data()) +
                              i * (b.size_bytes() / copies));
}

// Whether every buffer splits into `copies` equal copies along its leading dimensions.
template <typename... Buffers>
bool SplitsInto(int64_t copies, const Buffers&... bs) {
  return ((Leading(bs, 1) % copies == 0 && bs.size_bytes() % copies == 0) && ...);
}

// ---------------------------------------------------------------------------
// Work on XLA's thread pool.
// ---------------------------------------------------------------------------

// Runs fn(i) for i in [0, n) on the calling thread and up to n - 1 pool threads, each
// with single-threaded oneDNN. Returns when all n are done.
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const std::function<void(int64_t)>& fn);

// Splits a batch of n into chunks: (offset, size) pairs, at most `parts` of them, with at
// most two distinct sizes.
std::vector<std::pair<int64_t, int64_t>> Chunks(int64_t n, int64_t parts);

// One chunk per pool thread.
int64_t Parts(ffi::ThreadPool& pool);

// A cache of built primitives keyed by the raw bytes of a vector of integers.
template <typename Entry>
class Cache {
 public:
  // The library's one cache of Entry primitives.
  static Cache& Global() {
    static Cache cache;
    return cache;
  }

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

// ---------------------------------------------------------------------------
// Time inside the handlers, for profiles.
// ---------------------------------------------------------------------------

// The timed handlers, in the order of cnn_cases_targets().
enum TimedHandler : int {
  kTimedConvForward = 0,
  kTimedConvBackwardData,
  kTimedConvBackwardWeights,
  kTimedBnTrain,
  kTimedBnInference,
  kTimedBnBackward,
  kTimedHandlers,
};

// Adds the wall time from its construction to its destruction, and one call, to a
// handler's totals (cnn_cases_handler_times).
class HandlerTimer {
 public:
  explicit HandlerTimer(TimedHandler h);
  ~HandlerTimer();
  HandlerTimer(const HandlerTimer&) = delete;
  HandlerTimer& operator=(const HandlerTimer&) = delete;

 private:
  TimedHandler handler_;
  int64_t start_ns_;
};

// ---------------------------------------------------------------------------
// The library's targets.
// ---------------------------------------------------------------------------

// One FFI handler and the name it is registered under (without the "cnn_cases_" prefix).
struct Target {
  const char* name;
  XLA_FFI_Handler* handler;
};

}  // namespace cnn_cases

// Handlers defined without an explicit binding (XLA_FFI_DEFINE_HANDLER(name, impl)) bind
// their parameters by type: buffers as operands, results as results, a struct registered
// with XLA_FFI_REGISTER_STRUCT_ATTR_DECODING as the named attributes, and, with this,
// XLA's intra-op thread pool as context.
template <>
struct xla::ffi::CtxBinding<xla::ffi::ThreadPool> {
  using Ctx = xla::ffi::ThreadPool;
};

// The handlers, by op family; onednn_common.cc lists them all in cnn_cases_targets().
// conv.cc:
XLA_FFI_DECLARE_HANDLER_SYMBOL(cnn_cases_conv_forward);
XLA_FFI_DECLARE_HANDLER_SYMBOL(cnn_cases_conv_backward_data);
XLA_FFI_DECLARE_HANDLER_SYMBOL(cnn_cases_conv_backward_weights);
// batch_norm.cc:
XLA_FFI_DECLARE_HANDLER_SYMBOL(cnn_cases_bn_train);
XLA_FFI_DECLARE_HANDLER_SYMBOL(cnn_cases_bn_inference);
XLA_FFI_DECLARE_HANDLER_SYMBOL(cnn_cases_bn_backward);

#endif  // CNN_CASES_KERNELS_ONEDNN_COMMON_H_
