// cortex.hpp — header-only C++17 wrapper over the C ABI of include/cortex.h.
//
//   cortex::Model model = cortex::Model::load("examples/models/lstm_stack");
//   cortex::State state = model.new_state(4);
//   std::vector<float> x(4 * model.d_in()), y(4 * model.d_out());
//   model.step_into(state, cortex::TensorView::of(x, {4, model.d_in()}),
//                   cortex::TensorView::of(y, {4, model.d_out()}));
//
// - Model, State and Tensor own one C handle each: move-only, released by the
//   destructor (cx_*_free), never copied implicitly (State::clone() copies).
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

/// OpenBLAS threads (n <= 0: all cores). Not thread-safe: call before starting workers.
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

// ------------------------------------------------------------------ Tensor --

/// An immutable tensor owned by Cortex (an output, a state copy or an import).
class Tensor {
 public:
  Tensor() noexcept = default;
  /// Take ownership of a handle.
  explicit Tensor(cx_tensor_t *handle) noexcept : h_(handle) {}
  ~Tensor() { cx_tensor_free(h_); }
  Tensor(Tensor &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Tensor &operator=(Tensor &&o) noexcept {
    if (this != &o) {
      cx_tensor_free(h_);
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  Tensor(const Tensor &) = delete;
  Tensor &operator=(const Tensor &) = delete;

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

  explicit operator bool() const noexcept { return h_ != nullptr; }
  cx_tensor_t *get() const noexcept { return h_; }
  /// Give up ownership (the caller then frees with cx_tensor_free).
  cx_tensor_t *release() noexcept { return std::exchange(h_, nullptr); }

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

  cx_tensor_t *h_ = nullptr;
};

inline Input::Input(const Tensor &t) : p_(&t.view()) {}

// ------------------------------------------------------------------- State --

/// The recurrent state of a batch of streams. Keeps its model alive.
class State {
 public:
  State() noexcept = default;
  explicit State(cx_state_t *handle) noexcept : h_(handle) {}
  ~State() { cx_state_free(h_); }
  State(State &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  State &operator=(State &&o) noexcept {
    if (this != &o) {
      cx_state_free(h_);
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  State(const State &) = delete;
  State &operator=(const State &) = delete;

  explicit operator bool() const noexcept { return h_ != nullptr; }
  cx_state_t *get() const noexcept { return h_; }
  cx_state_t *release() noexcept { return std::exchange(h_, nullptr); }

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

  std::vector<uint8_t> to_bytes() const {
    size_t needed = 0;
    cx_status s = cx_state_to_bytes(h_, nullptr, 0, &needed);
    if (s != CX_STATUS_BUFFER_TOO_SMALL) check(s);
    std::vector<uint8_t> out(needed);
    check(cx_state_to_bytes(h_, out.data(), out.size(), &needed));
    out.resize(needed);
    return out;
  }

  void save(const std::string &path) const { check(cx_state_save(h_, path.c_str())); }

 private:
  cx_state_t *h_ = nullptr;
};

// ------------------------------------------------------------------- Model --

/// A loaded model: immutable, shareable by threads (through const references).
class Model {
 public:
  Model() noexcept = default;
  explicit Model(cx_model_t *handle) noexcept : h_(handle) {}
  ~Model() { cx_model_free(h_); }
  Model(Model &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Model &operator=(Model &&o) noexcept {
    if (this != &o) {
      cx_model_free(h_);
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;

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

  explicit operator bool() const noexcept { return h_ != nullptr; }
  cx_model_t *get() const noexcept { return h_; }
  cx_model_t *release() noexcept { return std::exchange(h_, nullptr); }

  int64_t d_in() const { return dims().first; }
  int64_t d_out() const { return dims().second; }
  std::pair<int64_t, int64_t> dims() const {
    int64_t a = 0, b = 0;
    check(cx_model_dims(h_, &a, &b));
    return {a, b};
  }

  /// The model description (architecture, config, fingerprint, state names) as JSON.
  std::string info_json() const {
    size_t needed = 0;
    cx_status s = cx_model_info_json(h_, nullptr, 0, &needed);
    if (s != CX_STATUS_BUFFER_TOO_SMALL) check(s);
    std::string out(needed, '\0');
    check(cx_model_info_json(h_, &out[0], out.size(), &needed));
    out.resize(needed > 0 ? needed - 1 : 0);  // drop the NUL
    return out;
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

 private:
  cx_model_t *h_ = nullptr;
};

}  // namespace cortex

#endif  // CORTEX_HPP
