// The handlers' shared runtime (onednn_common.h) and the library's C interface: the
// table of targets, its interface version and oneDNN's version.

#include "onednn_common.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>

namespace cnn_cases {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& Stream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

ffi::Error Fail(const std::string& what) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "cnn_cases oneDNN: " + what);
}

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

char* Scratch(size_t bytes) {
  thread_local std::vector<char> buf;
  if (buf.size() < bytes + 64) buf.resize(bytes + 64);
  return reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(buf.data()) + 63) / 64 * 64);
}

bool ToDnnl(ffi::DataType t, memory::data_type* out) {
  switch (t) {
    case ffi::DataType::F32: *out = memory::data_type::f32; return true;
    case ffi::DataType::BF16: *out = memory::data_type::bf16; return true;
    default: return false;
  }
}

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

namespace {

std::atomic<int64_t> handler_ns[kTimedHandlers];
std::atomic<int64_t> handler_calls[kTimedHandlers];

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

HandlerTimer::HandlerTimer(TimedHandler h) : handler_(h), start_ns_(NowNs()) {}

HandlerTimer::~HandlerTimer() {
  handler_ns[handler_].fetch_add(NowNs() - start_ns_, std::memory_order_relaxed);
  handler_calls[handler_].fetch_add(1, std::memory_order_relaxed);
}

}  // namespace cnn_cases

// Every handler of the library, ended by a {nullptr, nullptr} record; Python registers
// each as "cnn_cases_" + name.
CNN_CASES_EXPORT const cnn_cases::Target* cnn_cases_targets() {
  static const cnn_cases::Target targets[] = {
      {"conv_forward", cnn_cases_conv_forward},
      {"conv_backward_data", cnn_cases_conv_backward_data},
      {"conv_backward_weights", cnn_cases_conv_backward_weights},
      {"bn_train", cnn_cases_bn_train},
      {"bn_inference", cnn_cases_bn_inference},
      {"bn_backward", cnn_cases_bn_backward},
      {nullptr, nullptr},
  };
  return targets;
}

// The handlers' interface (their operands and attributes); it changes whenever a
// handler's binding does.
CNN_CASES_EXPORT int64_t cnn_cases_abi_version() { return 5; }

// oneDNN's version, major * 10000 + minor * 100 + patch.
CNN_CASES_EXPORT int64_t cnn_cases_onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}

// The wall nanoseconds spent inside each handler and its calls since the last reset, in the
// order of cnn_cases_targets(), into ns[0 .. n) and calls[0 .. n); returns how many
// handlers are timed. Handlers that XLA runs at the same time each count their own time.
CNN_CASES_EXPORT int64_t cnn_cases_handler_times(int64_t* ns, int64_t* calls, int64_t n) {
  for (int64_t i = 0; i < std::min<int64_t>(n, cnn_cases::kTimedHandlers); ++i) {
    ns[i] = cnn_cases::handler_ns[i].load();
    calls[i] = cnn_cases::handler_calls[i].load();
  }
  return cnn_cases::kTimedHandlers;
}

CNN_CASES_EXPORT void cnn_cases_reset_handler_times() {
  for (int i = 0; i < cnn_cases::kTimedHandlers; ++i) {
    cnn_cases::handler_ns[i] = 0;
    cnn_cases::handler_calls[i] = 0;
  }
}

// Whether oneDNN's convolutions run bf16 at its own rate here: 1 where the CPU has AVX-512
// with bf16 dot products (avx512_bf16, and every ISA above it: AMX), else 0. Elsewhere
// oneDNN has no bf16 convolution (AVX2) or emulates it at half f32's speed (AVX-512).
// Follows ONEDNN_MAX_CPU_ISA.
CNN_CASES_EXPORT int64_t cnn_cases_native_bf16() {
  const auto isa = static_cast<int64_t>(dnnl_get_effective_cpu_isa());
  const auto bf16 = static_cast<int64_t>(dnnl_cpu_isa_avx512_core_bf16);
  return (isa & bf16) == bf16;
}
