// cortex.hpp — header-only C++17 wrapper over the C ABI of include/cortex.h.
//
//   cortex::Model model = cortex::Model::load("examples/models/lstm_stack");
//   cortex::State state = model.new_state(4);
//   std::vector<float> x(4 * model.d_in()), y(4 * model.d_out());
//   model.step_into(state, cortex::TensorView::of(x, {4, model.d_in()}),
//                   cortex::TensorView::of(y, {4, model.d_out()}));
//
// - Model, State, Tensor, Cache, Generator, Session, Store and SpikeStream own one C
//   handle each: move-only, released by the destructor (cx_*_free), never copied
//   implicitly (State::clone(), Cache::fork() and Session::fork() copy). Every function
//   of cortex.h has a wrapper here (scripts/check_abi.py --cpp checks it).
// - Every failing call throws cortex::Error, whose what() is cx_last_error() and
//   status() the cx_status. A failed call changes nothing (the C contract).
// - TensorView is a non-owning DLTensor over caller memory (std::vector or raw
//   pointer) that carries its own shape/strides storage; it is copyable. Cortex
//   never writes an input, so views over const data are fine as inputs.
// - Thread contract as in cortex.h: a Model may be shared by threads, a State is
//   used by one thread at a time (a concurrent call throws Error with CX_STATUS_BUSY).
#ifndef CORTEX_HPP
#define CORTEX_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cortex.h"

namespace cortex {

// ------------------------------------------------------------------ errors --

/// A failed Cortex call: what() is the C library's message (cx_last_error()).
class Error : public std::runtime_error {
 public:
  Error(cx_status status, const std::string &message) : std::runtime_error(message), status_(status) {}

  cx_status status() const noexcept { return status_; }
  /// E.g. "CX_STATUS_SHAPE_MISMATCH".
  const char *status_name() const noexcept { return cx_status_name(status_); }

 private:
  cx_status status_;
};

/// Throw Error(status, cx_last_error()) unless status is CX_STATUS_OK.
inline void check(cx_status status) {
  if (status != CX_STATUS_OK) throw Error(status, cx_last_error());
}

/// Refuse a library built for another ABI than this header (done by Model::load).
inline void check_abi() {
  if (cx_abi_version() != CX_ABI_VERSION) {
    throw Error(CX_STATUS_UNSUPPORTED, "[cortex.hpp] libcortex ABI version " + std::to_string(cx_abi_version()) +
                                           " does not match the header's " + std::to_string(CX_ABI_VERSION));
  }
}

inline std::string version() { return cx_version_string(); }

/// Cortex's threads (n <= 0: the default, see cx_set_num_threads). Thread-safe.
inline void set_num_threads(int32_t n) { check(cx_set_num_threads(n)); }
inline int32_t num_threads() { return cx_get_num_threads(); }

// ------------------------------------------------------------------ dtypes --

/// IEEE binary16 and bfloat16 storage types (raw bits), for DLPack inputs.
struct float16_t {
  uint16_t bits;
};
struct bfloat16_t {
  uint16_t bits;
};

/// The DLPack dtype of a C++ element type.
template <class T>
struct dtype_of;
#define CORTEX_HPP_DTYPE(T, CODE, BITS) \
  template <>                           \
  struct dtype_of<T> {                  \
    static constexpr DLDataType value{static_cast<uint8_t>(CODE), BITS, 1}; \
  };
CORTEX_HPP_DTYPE(float, 2, 32)
CORTEX_HPP_DTYPE(double, 2, 64)
CORTEX_HPP_DTYPE(float16_t, 2, 16)
CORTEX_HPP_DTYPE(bfloat16_t, 4, 16)
CORTEX_HPP_DTYPE(bool, CX_DLPACK_CODE_BOOL, 8)
CORTEX_HPP_DTYPE(int8_t, 0, 8)
CORTEX_HPP_DTYPE(int16_t, 0, 16)
CORTEX_HPP_DTYPE(int32_t, 0, 32)
CORTEX_HPP_DTYPE(int64_t, 0, 64)
CORTEX_HPP_DTYPE(uint8_t, 1, 8)
CORTEX_HPP_DTYPE(uint16_t, 1, 16)
CORTEX_HPP_DTYPE(uint32_t, 1, 32)
CORTEX_HPP_DTYPE(uint64_t, 1, 64)
#undef CORTEX_HPP_DTYPE

// -------------------------------------------------------------- TensorView --

/// A non-owning DLTensor (CPU) over caller memory, with its own shape and stride
/// storage (rank <= 8). Copies re-point the DLTensor at their own arrays.
class TensorView {
 public:
  static constexpr int kMaxRank = 8;

  TensorView() noexcept { bind(); }

  /// View `data` (+ byte_offset bytes) as `shape` with element `strides`
  /// (empty: compact row-major).
  TensorView(void *data, DLDataType dtype, const std::vector<int64_t> &shape,
             const std::vector<int64_t> &strides = {}, uint64_t byte_offset = 0) {
    if (shape.size() > static_cast<size_t>(kMaxRank)) {
      throw std::invalid_argument("cortex::TensorView: rank " + std::to_string(shape.size()) + " > 8");
    }
    if (!strides.empty() && strides.size() != shape.size()) {
      throw std::invalid_argument("cortex::TensorView: strides and shape differ in rank");
    }
    rank_ = static_cast<int32_t>(shape.size());
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] < 0) throw std::invalid_argument("cortex::TensorView: negative dimension");
      shape_[i] = shape[i];
    }
    has_strides_ = !strides.empty();
    for (size_t i = 0; i < strides.size(); ++i) strides_[i] = strides[i];
    data_ = data;
    dtype_ = dtype;
    byte_offset_ = byte_offset;
    bind();
  }

  /// A view over raw memory of element type T.
  template <class T>
  static TensorView of(T *data, const std::vector<int64_t> &shape, const std::vector<int64_t> &strides = {},
                       uint64_t byte_offset = 0) {
    using U = std::remove_const_t<T>;
    return TensorView(const_cast<U *>(data), dtype_of<U>::value, shape, strides, byte_offset);
  }

  /// A view over a vector; the elements the view addresses must lie inside it.
  template <class T>
  static TensorView of(std::vector<T> &v, const std::vector<int64_t> &shape,
                       const std::vector<int64_t> &strides = {}) {
    static_assert(!std::is_same_v<T, bool>, "std::vector<bool> has no contiguous storage: use uint8_t");
    TensorView t = of(v.data(), shape, strides);
    t.require_within(v.size());
    return t;
  }

  /// A read-only input view over a vector (Cortex never writes inputs).
  template <class T>
  static TensorView of(const std::vector<T> &v, const std::vector<int64_t> &shape,
                       const std::vector<int64_t> &strides = {}) {
    static_assert(!std::is_same_v<T, bool>, "std::vector<bool> has no contiguous storage: use uint8_t");
    TensorView t = of(v.data(), shape, strides);
    t.require_within(v.size());
    return t;
  }

  TensorView(const TensorView &o) noexcept { copy_from(o); }
  TensorView &operator=(const TensorView &o) noexcept {
    if (this != &o) copy_from(o);
    return *this;
  }

  DLTensor *get() noexcept { return &dl_; }
  const DLTensor *get() const noexcept { return &dl_; }
  int32_t rank() const noexcept { return rank_; }
  int64_t dim(int i) const { return shape_.at(static_cast<size_t>(i)); }

  /// Number of elements.
  int64_t numel() const noexcept {
    int64_t n = 1;
    for (int32_t i = 0; i < rank_; ++i) n *= shape_[static_cast<size_t>(i)];
    return n;
  }

 private:
  void bind() noexcept {
    dl_.data = data_;
    dl_.device.device_type = kDLCPU;
    dl_.device.device_id = 0;
    dl_.ndim = rank_;
    dl_.dtype = dtype_;
    dl_.shape = shape_.data();
    dl_.strides = has_strides_ ? strides_.data() : nullptr;
    dl_.byte_offset = byte_offset_;
  }

  void copy_from(const TensorView &o) noexcept {
    data_ = o.data_;
    dtype_ = o.dtype_;
    rank_ = o.rank_;
    shape_ = o.shape_;
    strides_ = o.strides_;
    has_strides_ = o.has_strides_;
    byte_offset_ = o.byte_offset_;
    bind();
  }

  /// Every addressed element lies in [0, size) (no negative strides over vectors).
  void require_within(size_t size) const {
    if (numel() == 0) return;
    int64_t last = 0;
    int64_t compact = 1;
    for (int32_t i = rank_ - 1; i >= 0; --i) {
      const auto k = static_cast<size_t>(i);
      const int64_t stride = has_strides_ ? strides_[k] : compact;
      if (stride < 0) throw std::invalid_argument("cortex::TensorView: negative stride over a vector");
      last += (shape_[k] - 1) * stride;
      compact *= shape_[k];
    }
    if (static_cast<uint64_t>(last) >= size) {
      throw std::invalid_argument("cortex::TensorView: the view addresses element " + std::to_string(last) +
                                  " of a vector of " + std::to_string(size));
    }
  }

  void *data_ = nullptr;
  DLDataType dtype_{2, 32, 1};
  int32_t rank_ = 0;
  std::array<int64_t, kMaxRank> shape_{};
  std::array<int64_t, kMaxRank> strides_{};
  bool has_strides_ = false;
  uint64_t byte_offset_ = 0;
  DLTensor dl_{};
};

class Tensor;

/// Anything usable as an input tensor: a TensorView, a Tensor, a raw DLTensor
/// pointer, or nullptr (for optional resets).
class Input {
 public:
  Input(std::nullptr_t) noexcept {}
  Input(const DLTensor *t) noexcept : p_(t) {}
  Input(const TensorView &v) noexcept : p_(v.get()) {}
  inline Input(const Tensor &t);
  const DLTensor *get() const noexcept { return p_; }

 private:
  const DLTensor *p_ = nullptr;
};

// ------------------------------------------------------------- ownership --

/// One owned C handle, released by Free: move-only.
template <class T, void (*Free)(T *)>
class Owned {
 public:
  Owned() noexcept = default;
  explicit Owned(T *handle) noexcept : h_(handle) {}
  ~Owned() { Free(h_); }
  Owned(Owned &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Owned &operator=(Owned &&o) noexcept {
    if (this != &o) {
      Free(h_);
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  Owned(const Owned &) = delete;
  Owned &operator=(const Owned &) = delete;
  explicit operator bool() const noexcept { return h_ != nullptr; }
  T *get() const noexcept { return h_; }
  /// Give up ownership (the caller then frees the handle).
  T *release() noexcept { return std::exchange(h_, nullptr); }

 protected:
  T *h_ = nullptr;
};

// ------------------------------------------------------------------ Tensor --

/// An immutable tensor owned by Cortex (an output, a state copy or an import).
class Tensor : public Owned<cx_tensor_t, cx_tensor_free> {
 public:
  using Owned::Owned;

  /// Import a DLPack 1.x tensor. Takes ownership of `managed` whatever happens.
  static Tensor from_dlpack(DLManagedTensorVersioned *managed) {
    cx_tensor_t *t = nullptr;
    check(cx_tensor_from_dlpack(managed, &t));
    return Tensor(t);
  }
  /// Import a legacy DLPack 0.6 tensor. Takes ownership of `managed` whatever happens.
  static Tensor from_dlpack(DLManagedTensor *managed) {
    cx_tensor_t *t = nullptr;
    check(cx_tensor_from_dlpack_legacy(managed, &t));
    return Tensor(t);
  }


  /// The DLTensor view, valid while this Tensor lives.
  const DLTensor &view() const {
    const DLTensor *v = nullptr;
    check(cx_tensor_view(h_, &v));
    return *v;
  }

  std::vector<int64_t> shape() const {
    const DLTensor &v = view();
    return std::vector<int64_t>(v.shape, v.shape + v.ndim);
  }

  int64_t numel() const {
    const DLTensor &v = view();
    int64_t n = 1;
    for (int32_t i = 0; i < v.ndim; ++i) n *= v.shape[i];
    return n;
  }

  /// Pointer to compact float32 data (outputs and state copies always are).
  const float *data() const {
    const DLTensor &v = view();
    if (v.dtype.code != 2 || v.dtype.bits != 32 || v.dtype.lanes != 1) {
      throw Error(CX_STATUS_DTYPE_MISMATCH, "[cortex.hpp] Tensor::data: not a float32 tensor");
    }
    if (!compact(v)) throw Error(CX_STATUS_SHAPE_MISMATCH, "[cortex.hpp] Tensor::data: not compact");
    return reinterpret_cast<const float *>(static_cast<const char *>(v.data) + v.byte_offset);
  }

  /// A copy of a float32 tensor's elements in row-major order (any strides).
  std::vector<float> to_vector() const {
    const DLTensor &v = view();
    if (v.dtype.code != 2 || v.dtype.bits != 32 || v.dtype.lanes != 1) {
      throw Error(CX_STATUS_DTYPE_MISMATCH, "[cortex.hpp] Tensor::to_vector: not a float32 tensor");
    }
    const auto n = static_cast<size_t>(numel());
    std::vector<float> out(n);
    if (n == 0) return out;
    const float *base = reinterpret_cast<const float *>(static_cast<const char *>(v.data) + v.byte_offset);
    if (compact(v)) {
      for (size_t i = 0; i < n; ++i) out[i] = base[i];
      return out;
    }
    std::vector<int64_t> index(static_cast<size_t>(v.ndim), 0);
    for (size_t i = 0; i < n; ++i) {
      int64_t off = 0;
      for (int32_t d = 0; d < v.ndim; ++d) off += index[static_cast<size_t>(d)] * v.strides[d];
      out[i] = base[off];
      for (int32_t d = v.ndim - 1; d >= 0; --d) {
        if (++index[static_cast<size_t>(d)] < v.shape[d]) break;
        index[static_cast<size_t>(d)] = 0;
      }
    }
    return out;
  }

  /// Export as DLPack 1.x; the caller calls (*out)->deleter(out) exactly once.
  DLManagedTensorVersioned *to_dlpack() const {
    DLManagedTensorVersioned *m = nullptr;
    check(cx_tensor_to_dlpack(h_, &m));
    return m;
  }
  /// Export as legacy DLPack 0.6; same contract.
  DLManagedTensor *to_dlpack_legacy() const {
    DLManagedTensor *m = nullptr;
    check(cx_tensor_to_dlpack_legacy(h_, &m));
    return m;
  }

 private:
  static bool compact(const DLTensor &v) noexcept {
    if (v.strides == nullptr) return true;
    int64_t expect = 1;
    for (int32_t i = v.ndim - 1; i >= 0; --i) {
      if (v.shape[i] > 1 && v.strides[i] != expect) return false;
      expect *= v.shape[i];
    }
    return true;
  }
};

inline Input::Input(const Tensor &t) : p_(&t.view()) {}

// ----------------------------------------------------------- size queries --

namespace detail {
/// A size-query call f(buf, cap, &needed) into bytes. The size is asked again when the
/// object grew between the two calls (a store shared with other threads).
template <class F>
std::vector<uint8_t> query_bytes(F f) {
  size_t needed = 0;
  std::vector<uint8_t> out;
  for (;;) {
    cx_status s = f(out.empty() ? nullptr : out.data(), out.size(), &needed);
    if (s == CX_STATUS_OK) {
      out.resize(needed);
      return out;
    }
    if (s != CX_STATUS_BUFFER_TOO_SMALL) check(s);
    out.assign(needed, 0);
  }
}

/// A size-query call f(buf, cap, &needed) into a string (text: without its NUL).
template <class F>
std::string query_text(F f) {
  std::vector<uint8_t> bytes =
      query_bytes([&](void *b, size_t c, size_t *n) { return f(static_cast<char *>(b), c, n); });
  return std::string(bytes.begin(), bytes.end() - (bytes.empty() ? 0 : 1));  // drop the NUL
}
}  // namespace detail

// ------------------------------------------------------------------- State --

/// The recurrent state of a batch of streams. Keeps its model alive.
class State : public Owned<cx_state_t, cx_state_free> {
 public:
  using Owned::Owned;


  int64_t batch() const {
    int64_t b = 0;
    check(cx_state_batch(h_, &b));
    return b;
  }

  /// Zero every row.
  void reset() { check(cx_state_reset(h_, nullptr)); }
  /// Zero the rows whose mask element ([B], float/int/bool) is non-zero.
  void reset(Input mask) {
    if (mask.get() == nullptr) throw std::invalid_argument("cortex::State::reset: mask is null (use reset())");
    check(cx_state_reset(h_, mask.get()));
  }

  State clone() const {
    cx_state_t *s = nullptr;
    check(cx_state_clone(h_, &s));
    return State(s);
  }

  /// Copy of the state tensor at `path` (names listed by Model::info_json()).
  Tensor tensor(const std::string &path) const {
    cx_tensor_t *t = nullptr;
    check(cx_state_get_tensor(h_, path.c_str(), &t));
    return Tensor(t);
  }

  /// Write the state tensor at `path` ([B, ...] float).
  void set_tensor(const std::string &path, Input value) { check(cx_state_set_tensor(h_, path.c_str(), value.get())); }

  /// Routed adapters: bind stream b to slot ids[b] ([B], any integer dtype; null unbinds).
  void set_route_ids(Input ids) { check(cx_state_set_route_ids(h_, ids.get())); }
  /// The bound slots, or an empty vector when none are bound.
  std::vector<int64_t> route_ids() const {
    std::vector<int64_t> ids(static_cast<size_t>(batch()));
    int32_t set = 0;
    check(cx_state_get_route_ids(h_, ids.data(), static_cast<int64_t>(ids.size()), &set));
    if (!set) ids.clear();
    return ids;
  }

  std::vector<uint8_t> to_bytes() const {
    return detail::query_bytes([&](void *b, size_t c, size_t *n) { return cx_state_to_bytes(h_, b, c, n); });
  }

  void save(const std::string &path) const { check(cx_state_save(h_, path.c_str())); }

};

// ------------------------------------------------- handles of other kinds --



/// A KV cache of a batch of sequences (language models); one thread at a time.
class Cache : public Owned<cx_cache_t, cx_cache_free> {
 public:
  using Owned::Owned;
  /// (batch, position).
  std::pair<int64_t, int64_t> info() const {
    int64_t b = 0, p = 0;
    check(cx_cache_info(h_, &b, &p));
    return {b, p};
  }
  /// A copy sharing the filled pages (copy-on-write); `pages_shared` gets their count.
  Cache fork(int64_t *pages_shared = nullptr) const {
    cx_cache_t *out = nullptr;
    check(cx_cache_fork(h_, &out, pages_shared));
    return Cache(out);
  }
  std::vector<uint8_t> to_bytes() const {
    return detail::query_bytes([&](void *b, size_t c, size_t *n) { return cx_cache_to_bytes(h_, b, c, n); });
  }
};

/// Token-by-token generation (language models).
class Generator : public Owned<cx_generator_t, cx_generator_free> {
 public:
  using Owned::Owned;
  /// The next token of each of the `batch` sequences; returns whether all are done.
  bool next(int64_t *tokens, int64_t batch) {
    int32_t done = 0;
    check(cx_generator_next(h_, tokens, batch, &done));
    return done != 0;
  }
};

/// The sidecar memory of one conversation (sidecars); one thread at a time.
class Session : public Owned<cx_session_t, cx_session_free> {
 public:
  using Owned::Owned;
  std::string id() const {
    return detail::query_text([&](char *b, size_t c, size_t *n) { return cx_session_id(h_, b, c, n); });
  }
  /// (batch, tokens seen by the busiest stream, bytes of memory).
  std::array<int64_t, 3> info() const {
    std::array<int64_t, 3> v{};
    check(cx_session_info(h_, &v[0], &v[1], &v[2]));
    return v;
  }
  void reset(Input mask = nullptr) { check(cx_session_reset(h_, mask.get())); }
  Session fork(const std::string &id) const {
    cx_session_t *out = nullptr;
    check(cx_session_fork(h_, id.c_str(), &out));
    return Session(out);
  }
  std::vector<uint8_t> to_bytes() const {
    return detail::query_bytes([&](void *b, size_t c, size_t *n) { return cx_session_to_bytes(h_, b, c, n); });
  }
  /// A layer's memory tensor by name (see cortex.h).
  Tensor state(int32_t layer, const std::string &name) const {
    cx_tensor_t *t = nullptr;
    check(cx_session_get_state(h_, layer, name.c_str(), &t));
    return Tensor(t);
  }
  /// Advance the plasticity signals by one token per stream (tensors may be null).
  void observe(Input logits, Input tokens = nullptr, Input losses = nullptr, Input rewards = nullptr) {
    check(cx_session_observe(h_, logits.get(), tokens.get(), losses.get(), rewards.get()));
  }
  Tensor signals() const {
    cx_tensor_t *t = nullptr;
    check(cx_session_signals(h_, &t));
    return Tensor(t);
  }
  int64_t segment_count(int64_t stream) const {
    int64_t n = 0;
    check(cx_session_segment_count(h_, stream, &n));
    return n;
  }
  struct Segment {
    int64_t start = 0, end = 0;
    Tensor h_mean, h_var, delta_u, delta_v;
  };
  Segment segment(int64_t stream, int64_t index) const {
    cx_tensor_t *t[4] = {nullptr, nullptr, nullptr, nullptr};
    Segment s;
    check(cx_session_segment(h_, stream, index, &s.start, &s.end, &t[0], &t[1], &t[2], &t[3]));
    s.h_mean = Tensor(t[0]);
    s.h_var = Tensor(t[1]);
    s.delta_u = Tensor(t[2]);
    s.delta_v = Tensor(t[3]);
    return s;
  }
};

/// A SQLite file of saved sessions; thread-safe.
class Store : public Owned<cx_store_t, cx_store_free> {
 public:
  using Owned::Owned;
  /// Open the file, creating it if needed.
  static Store create(const std::string &path, const cx_store_options *options = nullptr) {
    cx_store_t *out = nullptr;
    check(cx_store_create(path.c_str(), options, &out));
    return Store(out);
  }
  void save(const Session &session) { check(cx_store_save(h_, session.get())); }
  bool remove(const std::string &id) {
    int32_t existed = 0;
    check(cx_store_delete(h_, id.c_str(), &existed));
    return existed != 0;
  }
  /// The saved sessions (expired ones are purged first).
  std::string list_json() {
    return detail::query_text([&](char *b, size_t c, size_t *n) { return cx_store_list_json(h_, b, c, n); });
  }
  int64_t purge_expired() {
    int64_t removed = 0;
    check(cx_store_purge_expired(h_, &removed));
    return removed;
  }
};

/// A sliding-window spike stream (spike decoders); one thread at a time.
class SpikeStream : public Owned<cx_spike_stream_t, cx_spike_stream_free> {
 public:
  using Owned::Owned;
  /// One stride of events; the velocity of the window that ends with it.
  Tensor step(Input neuron_ids, Input time_bins, Input values) {
    cx_tensor_t *t = nullptr;
    check(cx_spike_stream_step(h_, neuron_ids.get(), time_bins.get(), values.get(), &t));
    return Tensor(t);
  }
  void reset() { check(cx_spike_stream_reset(h_)); }
  /// (bins, events, pages, page bytes).
  std::array<int64_t, 4> info() const {
    std::array<int64_t, 4> v{};
    check(cx_spike_stream_info(h_, &v[0], &v[1], &v[2], &v[3]));
    return v;
  }
};

/// Options with every field at its default (struct_size set).
inline cx_load_options load_options() { return cx_load_default_options(); }
inline cx_generate_options generate_options() { return cx_generate_default_options(); }
inline cx_store_options store_options() { return cx_store_default_options(); }
inline cx_spike_stream_options spike_stream_options() { return cx_spike_stream_default_options(); }

/// cortexcore's auto-built Column stack: the config.json text for a recipe (JSON).
inline std::string config_auto_stack(const std::string &recipe_json) {
  return detail::query_text(
      [&](char *b, size_t c, size_t *n) { return cx_config_auto_stack(recipe_json.data(), recipe_json.size(), b, c, n); });
}

/// Score a trained task model directory; options_json may be empty ("{}").
inline std::string task_evaluate(const std::string &dir, const std::string &options_json = "") {
  return detail::query_text([&](char *b, size_t c, size_t *n) {
    return cx_task_evaluate(dir.c_str(), options_json.empty() ? nullptr : options_json.c_str(), b, c, n);
  });
}

// ------------------------------------------------------------------- Model --

/// A loaded model: immutable, shareable by threads (through const references).
class Model : public Owned<cx_model_t, cx_model_free> {
 public:
  using Owned::Owned;

  /// Load a model directory (config.json + model.safetensors).
  static Model load(const std::string &dir, const cx_load_options *options = nullptr) {
    check_abi();
    cx_model_t *m = nullptr;
    check(cx_model_load(dir.c_str(), options, &m));
    return Model(m);
  }
  static Model load(const std::string &dir, cx_nan_policy nan_policy) {
    cx_load_options o = cx_load_default_options();
    o.nan_policy = nan_policy;
    return load(dir, &o);
  }

  /// Load from the text of a config.json and the bytes of a model.safetensors (copied).
  static Model from_memory(const std::string &config_json, const void *weights, size_t weights_len,
                           const cx_load_options *options = nullptr) {
    check_abi();
    cx_model_t *m = nullptr;
    check(cx_model_load_from_memory(config_json.data(), config_json.size(), weights, weights_len, options, &m));
    return Model(m);
  }

  int64_t d_in() const { return dims().first; }
  int64_t d_out() const { return dims().second; }
  std::pair<int64_t, int64_t> dims() const {
    int64_t a = 0, b = 0;
    check(cx_model_dims(h_, &a, &b));
    return {a, b};
  }

  /// The model description (architecture, config, fingerprint, state names) as JSON.
  std::string info_json() const {
    return detail::query_text([&](char *b, size_t c, size_t *n) { return cx_model_info_json(h_, b, c, n); });
  }

  /// The model's kind (enum cx_kind): each kind's calls are below, in their sections.
  cx_kind kind() const {
    int32_t k = 0;
    check(cx_model_kind(h_, &k));
    return static_cast<cx_kind>(k);
  }

  /// A fresh zero state for `batch` streams.
  State new_state(int64_t batch) const {
    cx_state_t *s = nullptr;
    check(cx_state_create(h_, batch, &s));
    return State(s);
  }

  State state_from_bytes(const void *bytes, size_t len) const {
    cx_state_t *s = nullptr;
    check(cx_state_from_bytes(h_, bytes, len, &s));
    return State(s);
  }
  State state_from_bytes(const std::vector<uint8_t> &bytes) const {
    return state_from_bytes(bytes.data(), bytes.size());
  }
  State load_state(const std::string &path) const {
    cx_state_t *s = nullptr;
    check(cx_state_load(h_, path.c_str(), &s));
    return State(s);
  }

  /// Sequence mode: x [B, T, D_in], resets nullptr / [B, T] / [B]. Returns [B, T, D_out].
  Tensor forward(State &state, Input x, Input resets = nullptr) const {
    cx_tensor_t *y = nullptr;
    check(cx_model_forward(h_, state.get(), x.get(), resets.get(), &y));
    return Tensor(y);
  }

  /// Step mode: x [B, D_in], resets nullptr / [B]. Returns [B, D_out].
  Tensor step(State &state, Input x, Input resets = nullptr) const {
    cx_tensor_t *y = nullptr;
    check(cx_model_step(h_, state.get(), x.get(), resets.get(), &y));
    return Tensor(y);
  }

  /// As forward/step, writing into the caller's float32 buffer `y` (argument order as in C).
  void forward_into(State &state, Input x, Input resets, TensorView y) const {
    check(cx_model_forward_into(h_, state.get(), x.get(), resets.get(), y.get()));
  }
  void forward_into(State &state, Input x, TensorView y) const { forward_into(state, x, nullptr, y); }
  /// No heap allocation after the state's first step.
  void step_into(State &state, Input x, Input resets, TensorView y) const {
    check(cx_model_step_into(h_, state.get(), x.get(), resets.get(), y.get()));
  }
  void step_into(State &state, Input x, TensorView y) const { step_into(state, x, nullptr, y); }

  // ---- language models (CX_KIND_LANGUAGE_MODEL)

  Cache new_cache(int64_t batch) const {
    cx_cache_t *c = nullptr;
    check(cx_cache_create(h_, batch, &c));
    return Cache(c);
  }
  Cache cache_from_bytes(const std::vector<uint8_t> &bytes) const {
    cx_cache_t *c = nullptr;
    check(cx_cache_from_bytes(h_, bytes.data(), bytes.size(), &c));
    return Cache(c);
  }
  /// Logits [B, T, vocab] of ids [B, T]; cache may be null; start_pos -1: the cache's.
  Tensor forward_tokens(Input ids, int32_t n_loops = 0, Cache *cache = nullptr, int64_t start_pos = -1) const {
    cx_tensor_t *t = nullptr;
    check(cx_model_forward_tokens(h_, ids.get(), n_loops, cache ? cache->get() : nullptr, start_pos, &t));
    return Tensor(t);
  }
  Generator generator(Input prompt, const cx_generate_options *options = nullptr) const {
    cx_generator_t *g = nullptr;
    check(cx_generator_create(h_, prompt.get(), options, &g));
    return Generator(g);
  }
  /// Prompt plus up to max_new_tokens per sequence into out ([B * (T + max_new)]);
  /// returns the steps generated.
  int64_t generate(Input prompt, int64_t max_new_tokens, int64_t *out, int64_t out_count,
                   const cx_generate_options *options = nullptr, cx_token_callback callback = nullptr,
                   void *user = nullptr) const {
    int64_t generated = 0;
    check(cx_model_generate(h_, prompt.get(), max_new_tokens, options, callback, user, out, out_count, &generated));
    return generated;
  }

  // ---- sidecars (CX_KIND_SIDECAR)

  Session new_session(const std::string &id, int64_t batch = 1) const {
    cx_session_t *s = nullptr;
    check(cx_session_create(h_, id.c_str(), batch, &s));
    return Session(s);
  }
  /// id empty: the blob's own id.
  Session session_from_bytes(const std::vector<uint8_t> &bytes, const std::string &id = "") const {
    cx_session_t *s = nullptr;
    check(cx_session_from_bytes(h_, bytes.data(), bytes.size(), id.empty() ? nullptr : id.c_str(), &s));
    return Session(s);
  }
  Session load_session(Store &store, const std::string &id) const {
    cx_session_t *s = nullptr;
    check(cx_store_load(store.get(), h_, id.c_str(), &s));
    return Session(s);
  }
  Tensor forward_sidecar(int32_t layer, Input h, Session &session, Input signals = nullptr) const {
    cx_tensor_t *t = nullptr;
    check(cx_model_forward_sidecar(h_, layer, h.get(), session.get(), signals.get(), &t));
    return Tensor(t);
  }
  void forward_sidecar_into(int32_t layer, Input h, Session &session, Input signals, TensorView y) const {
    check(cx_model_forward_sidecar_into(h_, layer, h.get(), session.get(), signals.get(), y.get()));
  }

  // ---- spike decoders (CX_KIND_SPIKE_DECODER)

  /// Velocity [B, outputs] of B requests of packed events (offsets [B + 1]).
  Tensor decode(Input neuron_ids, Input time_bins, Input values, Input offsets) const {
    cx_tensor_t *t = nullptr;
    check(cx_model_decode(h_, neuron_ids.get(), time_bins.get(), values.get(), offsets.get(), &t));
    return Tensor(t);
  }
  SpikeStream new_spike_stream(const cx_spike_stream_options *options = nullptr) const {
    cx_spike_stream_t *s = nullptr;
    check(cx_spike_stream_create(h_, options, &s));
    return SpikeStream(s);
  }

};

}  // namespace cortex

#endif  // CORTEX_HPP
