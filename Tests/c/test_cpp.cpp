// test_cpp.cpp — the C++17 wrapper bindings/c/cortex.hpp against the golden model.
//
//   test_cpp GOLDEN_DIR SCRATCH_DIR [GOLDENS_ROOT]
//
// With GOLDENS_ROOT (Tests/goldens), the other kinds too: a language model (caches,
// generation), a sidecar (sessions, the store) and a spike decoder (decode, streams).
#include "cortex.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <type_traits>
#include <vector>

// Ownership: move-only handles, copyable views.
static_assert(!std::is_copy_constructible_v<cortex::Model> && std::is_nothrow_move_constructible_v<cortex::Model>);
static_assert(!std::is_copy_constructible_v<cortex::State> && std::is_nothrow_move_constructible_v<cortex::State>);
static_assert(!std::is_copy_constructible_v<cortex::Tensor> && std::is_nothrow_move_constructible_v<cortex::Tensor>);
static_assert(!std::is_copy_assignable_v<cortex::Tensor> && std::is_nothrow_move_assignable_v<cortex::Tensor>);
static_assert(std::is_copy_constructible_v<cortex::TensorView>);
static_assert(!std::is_copy_constructible_v<cortex::Session> && std::is_nothrow_move_constructible_v<cortex::Session>);
static_assert(!std::is_copy_assignable_v<cortex::Cache> && std::is_nothrow_move_assignable_v<cortex::Cache>);

static int failures = 0, checks = 0;
#define CHECK(cond, what)                                                   \
  do {                                                                      \
    ++checks;                                                               \
    if (!(cond)) {                                                          \
      ++failures;                                                           \
      std::fprintf(stderr, "FAIL %s:%d: %s (%s)\n", __FILE__, __LINE__, what, #cond); \
    }                                                                       \
  } while (0)

// Expect `body` to throw cortex::Error with `status`.
template <class F>
static void expect_error(cx_status status, const char *what, F &&body) {
  ++checks;
  try {
    body();
    ++failures;
    std::fprintf(stderr, "FAIL: %s: no exception\n", what);
  } catch (const cortex::Error &e) {
    if (e.status() != status || std::strncmp(e.what(), "[cx_", 4) != 0) {
      ++failures;
      std::fprintf(stderr, "FAIL: %s: %s '%s' (want %s)\n", what, e.status_name(), e.what(), cx_status_name(status));
    }
  }
}

// The golden tensors we need, read through a tiny safetensors reader.
struct Safetensors {
  std::vector<unsigned char> bytes;
  size_t header = 0;
  explicit Safetensors(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
    uint64_t n = 0;
    for (int k = 0; k < 8 && bytes.size() >= 8; ++k) n |= uint64_t(bytes[size_t(k)]) << (8 * k);
    header = size_t(n);
  }
  // F32 tensor `name` (offsets found by scanning the header text).
  std::vector<float> f32(const std::string &name) const {
    const std::string h(bytes.begin() + 8, bytes.begin() + 8 + long(header));
    const size_t at = h.find("\"" + name + "\"");
    const size_t offs = h.find("\"data_offsets\":[", at);
    if (at == std::string::npos || offs == std::string::npos) throw std::runtime_error("missing " + name);
    size_t b = 0, e = 0;
    std::sscanf(h.c_str() + offs + 16, "%zu,%zu", &b, &e);
    std::vector<float> out((e - b) / 4);
    std::memcpy(out.data(), bytes.data() + 8 + header + b, e - b);
    return out;
  }
};

static double max_err(const float *a, const std::vector<float> &b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) m = std::fmax(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

static int deleted = 0;

// The wrappers of the language-model, sidecar and spike-decoder calls.
static void other_kinds(const std::string &root, const std::string &scratch) {
  {
    cortex::Model lm = cortex::Model::load(root + "/mythos/gqa/model");
    CHECK(lm.kind() == CX_KIND_LANGUAGE_MODEL, "language model kind");
    expect_error(CX_STATUS_UNSUPPORTED, "a language model has no recurrent state", [&] { lm.new_state(1); });
    std::vector<int64_t> ids = {1, 2, 3, 4};
    const auto prompt = cortex::TensorView::of(ids, {1, 4});
    cortex::Cache cache = lm.new_cache(1);
    cortex::Tensor logits = lm.forward_tokens(prompt, 0, &cache);
    CHECK((logits.shape() == std::vector<int64_t>{1, 4, 256}), "logits shape");
    CHECK((cache.info() == std::pair<int64_t, int64_t>{1, 4}), "cache position after 4 tokens");
    int64_t shared = -1;
    cortex::Cache fork = cache.fork(&shared);
    CHECK(shared >= 0 && fork.info() == cache.info(), "fork shares the pages");
    CHECK(lm.cache_from_bytes(cache.to_bytes()).to_bytes() == cache.to_bytes(), "cache bytes round trip");
    std::vector<int64_t> out(7);
    const int64_t n = lm.generate(prompt, 3, out.data(), 7);
    cortex::Generator gen = lm.generator(prompt);
    int64_t token = -1;
    bool same = n == 3;
    for (int t = 0; t < 3; ++t) {
      gen.next(&token, 1);
      same = same && token == out[4 + t];
    }
    CHECK(same && out[0] == 1 && out[3] == 4, "generate == generator, greedy");
    cortex::generate_options();
  }
  {
    cortex::Model sc = cortex::Model::load(root + "/sidecars/model_gdn/model");
    CHECK(sc.kind() == CX_KIND_SIDECAR, "sidecar kind");
    const int64_t D = sc.d_in();
    std::vector<float> h(size_t(2 * D), 0.25f), y(size_t(2 * D));
    cortex::Session s = sc.new_session("conversation");
    cortex::Tensor a = sc.forward_sidecar(1, cortex::TensorView::of(h, {1, 2, D}), s);
    CHECK((a.shape() == std::vector<int64_t>{1, 2, D}), "sidecar output shape");
    CHECK(s.id() == "conversation" && s.info()[0] == 1 && s.info()[1] == 2, "session id and info");
    const std::vector<uint8_t> blob = s.to_bytes();
    cortex::Session copy = sc.session_from_bytes(blob);
    sc.forward_sidecar_into(3, cortex::TensorView::of(h, {1, 2, D}), copy, nullptr, cortex::TensorView::of(y, {1, 2, D}));
    CHECK(s.fork("other").id() == "other", "fork takes the new id");
    cortex::Store store = cortex::Store::create(scratch + "/sessions.db");
    store.save(s);
    CHECK(sc.load_session(store, "conversation").to_bytes() == blob, "store round trip");
    CHECK(store.list_json().find("conversation") != std::string::npos, "store lists the session");
    CHECK(store.remove("conversation") && !store.remove("conversation"), "remove once");
    CHECK(store.purge_expired() == 0, "nothing expires without a TTL");
    cortex::store_options();
  }
  {
    cortex::Model dec = cortex::Model::load(root + "/spike/decoder_small/model");
    CHECK(dec.kind() == CX_KIND_SPIKE_DECODER, "spike decoder kind");
    std::vector<int32_t> ids = {1, 2}, bins = {0, 1}, values = {1, 1}, offsets = {0, 2};
    cortex::Tensor v = dec.decode(cortex::TensorView::of(ids, {2}), cortex::TensorView::of(bins, {2}),
                                  cortex::TensorView::of(values, {2}), cortex::TensorView::of(offsets, {2}));
    CHECK(v.shape().size() == 2 && v.shape()[0] == 1, "decode: one request");
    cortex::SpikeStream stream = dec.new_spike_stream();
    cortex::Tensor w = stream.step(cortex::TensorView::of(ids, {2}), cortex::TensorView::of(bins, {2}),
                                   cortex::TensorView::of(values, {2}));
    CHECK(w.numel() == v.numel() && stream.info()[1] == 2, "stream step");
    stream.reset();
    CHECK(stream.info()[1] == 0, "reset forgets the events");
    cortex::spike_stream_options();
  }
  CHECK(cortex::config_auto_stack("{\"d_hidden\": 8, \"pattern\": \"L\"}").find("\"cortex_stack\"") != std::string::npos,
        "auto stack config");
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s GOLDEN_DIR SCRATCH_DIR [GOLDENS_ROOT]\n", argv[0]);
    return 2;
  }
  const std::string golden = argv[1], scratch = argv[2];
  try {
    cortex::check_abi();
    CHECK(cortex::version() == cx_version_string(), "version");
    const Safetensors cases(golden + "/cases.safetensors");
    const std::vector<float> x = cases.f32("seq/x"), y_ref = cases.f32("seq/y");
    const int64_t B = 3, T = 9;

    cortex::Model model = cortex::Model::load(golden + "/model");
    const int64_t D = model.d_in();
    CHECK(D == 24 && model.d_out() == 24, "dims");
    CHECK(model.info_json().find("\"fingerprint\"") != std::string::npos, "info JSON");
    CHECK(model.info_json().back() == '}', "info JSON has no trailing NUL");

    // Sequence mode, allocating.
    cortex::State state = model.new_state(B);
    CHECK(state.batch() == B, "batch");
    cortex::Tensor y = model.forward(state, cortex::TensorView::of(x, {B, T, D}));
    CHECK((y.shape() == std::vector<int64_t>{B, T, D}), "y shape");
    CHECK(max_err(y.data(), y_ref) <= 1e-5, "forward vs golden");
    CHECK(max_err(y.to_vector().data(), y_ref) <= 1e-5, "to_vector vs golden");
    const std::vector<uint8_t> snapshot = state.to_bytes();

    // Step mode into caller buffers, x[:, t] as a strided view with byte_offset.
    {
      cortex::State s2 = model.new_state(B);
      std::vector<float> ys(size_t(B * T * D));
      for (int64_t t = 0; t < T; ++t) {
        auto xt = cortex::TensorView::of(x.data(), {B, D}, {T * D, 1}, uint64_t(t * D) * sizeof(float));
        auto yt = cortex::TensorView::of(ys.data(), {B, D}, {T * D, 1}, uint64_t(t * D) * sizeof(float));
        model.step_into(s2, xt, yt);
      }
      CHECK(max_err(ys.data(), y_ref) <= 1e-5, "step_into vs golden");
      // Copies of a view re-point at their own shape arrays.
      auto v1 = cortex::TensorView::of(ys, {B, T, D});
      cortex::TensorView v2 = v1;
      v1 = cortex::TensorView::of(ys, {1, 2});
      CHECK(v2.get()->shape[0] == B && v2.get()->shape[2] == D && v2.get()->shape != v1.get()->shape, "view copy");
    }

    // Errors become exceptions carrying the status and cx_last_error().
    expect_error(CX_STATUS_SHAPE_MISMATCH, "wrong shape", [&] {
      std::vector<float> bad(size_t(B * (D + 1)));
      std::vector<float> out(size_t(B * D));
      model.step_into(state, cortex::TensorView::of(bad, {B, D + 1}), cortex::TensorView::of(out, {B, D}));
    });
    expect_error(CX_STATUS_IO_ERROR, "missing dir", [&] { cortex::Model::load(scratch + "/does-not-exist"); });
    expect_error(CX_STATUS_INVALID_ARGUMENT, "batch 0", [&] { model.new_state(0); });
    expect_error(CX_STATUS_INVALID_ARGUMENT, "unknown state path", [&] { state.tensor("nope"); });
    CHECK(state.to_bytes() == snapshot, "a failed call changed the state");
    ++checks;
    try {
      std::vector<float> small(4);
      (void)cortex::TensorView::of(small, {2, 3});
      ++failures;
      std::fprintf(stderr, "FAIL: a view larger than its vector was accepted\n");
    } catch (const std::invalid_argument &) {
    }

    // Moves leave empty handles whose destructors are no-ops; NULL handles are refused.
    {
      cortex::State moved = std::move(state);
      CHECK(!state && moved, "move");
      expect_error(CX_STATUS_INVALID_HANDLE, "moved-from state", [&] { (void)state.batch(); });
      state = std::move(moved);
      CHECK(state.batch() == B, "move back");
    }

    // Clone, bytes, files, reset with a mask.
    {
      cortex::State c = state.clone();
      CHECK(c.to_bytes() == snapshot, "clone");
      cortex::State back = model.state_from_bytes(snapshot);
      CHECK(back.to_bytes() == snapshot, "from_bytes");
      state.save(scratch + "/cpp-state.bin");
      CHECK(model.load_state(scratch + "/cpp-state.bin").to_bytes() == snapshot, "save/load");
      std::vector<uint8_t> mask = {0, 1, 0};
      c.reset(cortex::TensorView::of(mask, {B}));
      const cortex::Tensor h = c.tensor("PassThroughBlock_0.LSTMCell.h");
      const float *hp = h.data();
      CHECK(hp[D] == 0.0f && hp[2 * D - 1] == 0.0f && hp[0] != 0.0f, "reset row 1 only");
      c.reset();
      CHECK(c.tensor("PassThroughBlock_0.LSTMCell.c").to_vector() == std::vector<float>(size_t(B * D), 0.0f),
            "reset all");
    }

    // DLPack: an export outlives the tensor, the state and the model.
    {
      DLManagedTensorVersioned *m = nullptr;
      DLManagedTensor *legacy = nullptr;
      {
        cortex::Model m2 = cortex::Model::load(golden + "/model");
        cortex::State s2 = m2.new_state(B);
        cortex::Tensor y2 = m2.forward(s2, cortex::TensorView::of(x, {B, T, D}));
        m = y2.to_dlpack();
        legacy = y2.to_dlpack_legacy();
      }
      CHECK(max_err(static_cast<const float *>(m->dl_tensor.data), y_ref) <= 1e-5, "export data");
      m->deleter(m);
      legacy->deleter(legacy);

      // Import: the deleter runs once, when the Tensor goes away.
      static DLManagedTensorVersioned producer;
      static int64_t shape[3];
      shape[0] = B;
      shape[1] = T;
      shape[2] = D;
      producer = DLManagedTensorVersioned{};
      producer.version = {1, 0};
      producer.deleter = [](DLManagedTensorVersioned *) { ++deleted; };
      producer.dl_tensor = *cortex::TensorView::of(x.data(), {B, T, D}).get();
      producer.dl_tensor.shape = shape;
      {
        cortex::Tensor imported = cortex::Tensor::from_dlpack(&producer);
        cortex::State s3 = model.new_state(B);
        cortex::Tensor y3 = model.forward(s3, imported);
        CHECK(max_err(y3.data(), y_ref) <= 1e-5, "imported x");
        CHECK(deleted == 0, "deleter ran early");
      }
      CHECK(deleted == 1, "deleter once");
      producer.version = {2, 0};
      expect_error(CX_STATUS_UNSUPPORTED, "DLPack 2.0", [&] { cortex::Tensor::from_dlpack(&producer); });
      CHECK(deleted == 2, "deleter once on failure");
    }

    // float64 input through a vector<double> view.
    {
      std::vector<double> x64(x.begin(), x.end());
      cortex::State s4 = model.new_state(B);
      cortex::Tensor y4 = model.forward(s4, cortex::TensorView::of(x64, {B, T, D}));
      CHECK(std::memcmp(y4.data(), y.data(), sizeof(float) * size_t(B * T * D)) == 0, "float64 == float32");
    }
    CHECK(model.kind() == CX_KIND_STACK, "stack kind");
    if (argc == 4) other_kinds(argv[3], scratch);
  } catch (const cortex::Error &e) {
    std::fprintf(stderr, "FAIL: unexpected cortex::Error %s: %s\n", e.status_name(), e.what());
    return 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "FAIL: unexpected exception: %s\n", e.what());
    return 1;
  }
  std::printf("test_cpp: %d of %d checks %s\n", failures ? failures : checks, checks, failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
