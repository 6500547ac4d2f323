// libFuzzer entry point for the untrusted-input parsers: safetensors files, JSON
// configs, stack configs through the typed schema, whole model loads, OpenMythos KV-cache blobs, sidecar session blobs, and the
// serving engine's request bodies (the binary tensor body and /v1/decode's parsing). Built by scripts/fuzz.sh together with
// the Cortex sources (one module) with -sanitize=fuzzer,address.
//
// The first input byte picks the target, the rest is the payload.

let fuzzConfig = Array("""
{"format":"cortex","format_version":1,"architecture":"cortex_stack","config":{"blocks":[{"cell":{"hidden_size":null,"cell_type":"lstm","num_layers":1,"bias":true,"dropout":0.0,"proj_size":0},"block_type":"passthrough"}],"d_hidden":2,"post_norm":true}}
""".utf8)

/// The OpenMythos golden model the cache target decodes against (run from the repo root).
let fuzzMythos: Model? = try? Model.load(directory: "Tests/goldens/mythos/gqa/model")
/// The fast-weight sidecar golden model the session target decodes against.
let fuzzSidecar: Model? = try? Model.load(directory: "Tests/goldens/sidecars/model_fast_weight/model")

/// A serving engine on the spike decoder golden model, for the request-body target.
let fuzzEngine: ServingEngine? = (try? Model.load(directory: "Tests/goldens/spike/decoder_small/model")).flatMap {
    try? ServingEngine(model: $0, log: ServingLog(enabled: false))
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch data[0] % 9 {
    case 8:
        // A stack config through the typed schema and the parser: whatever parses must
        // have passed the schema, one scaffold per listed block.
        if let json = try? JSON.parse(bytes), let cfg = try? StackConfig.parse(json) {
            guard (try? StackSchema.check(json)) == cfg.ignoredFields,
                  (json["blocks"] ?? json["scaffolds"])?.array?.count == cfg.scaffolds.count else {
                fatalError("a stack config parsed that the schema refuses")
            }
        }
    case 6:
        // The binary tensor body: parse, and a parsed body's float tensors re-encode to
        // bytes that parse back to the same values.
        if let body = try? TensorBody.parse(bytes) {
            let floats = body.tensors.filter { $0.1.dtype == .float32 }.map { ($0.0, shape: $0.1.shape, values: $0.1.floats) }
            guard let again = try? TensorBody.parse(TensorBody.encode(floats)), again.tensors.count == floats.count else {
                fatalError("tensor body round trip failed")
            }
        }
    case 7:
        // A /v1/decode and a stream-step body (JSON when it starts with '{', else binary)
        // through the engine's parsing and validation.
        if let engine = fuzzEngine {
            let json = bytes.first == UInt8(ascii: "{")
            let r = ServingRequest(method: "POST", path: "/v1/decode",
                                   headers: json ? [] : [("content-type", TensorBody.contentType)], body: bytes)
            if let (body, _, _) = try? engine.parseBody(r) {
                _ = try? engine.windows(body)
                _ = try? engine.events(body, "")
            }
        }
    case 0:
        // safetensors: parse, then convert every tensor.
        if let f = try? SafetensorsFile(bytes: bytes) {
            for n in f.names { _ = try? f.tensor(n) }
        }
    case 1:
        // JSON, then its serialisation must parse back to the same value.
        if let v = try? JSON.parse(bytes) {
            guard let again = try? JSON.parse(v.serialized), again == v else {
                fatalError("JSON round trip changed the value")
            }
        }
    case 2:
        // A model config with fuzzed weights.
        _ = try? Model(configBytes: fuzzConfig, weightBytes: bytes)
    case 3:
        // A fuzzed config.json with no weights.
        _ = try? Model(configBytes: bytes, weightBytes: [])
    case 5:
        // Sidecar session bytes for the fast-weight golden model, then a step, an observe
        // and a re-encode on the restored session (each must run or fail cleanly).
        if let model = fuzzSidecar, let s = try? SessionCodec.decode(bytes, model: model) {
            let h = [Float](repeating: 0.5, count: s.batch * 24), y = UnsafeMutablePointer<Float>.allocate(capacity: s.batch * 24)
            defer { y.deallocate() }
            h.withUnsafeBufferPointer { p in
                if let base = p.baseAddress { try? s.forward(layer: 1, h: base, time: 1, signals: nil, into: y) }
            }
            let ones = [Double](repeating: 1, count: s.batch)
            try? s.observe(losses: ones, uncertainties: ones, rewards: ones)
            _ = try? SessionCodec.encode(s)
        }
    default:
        // OpenMythos KV-cache bytes for the gqa golden model, then a decode step on the
        // restored cache (it must run or fail cleanly).
        if let model = fuzzMythos, let cache = try? MythosCacheCodec.decode(bytes, model: model) {
            _ = try? model.logits(ids: [Int](repeating: 1, count: cache.batch), batch: cache.batch, loops: 1, cache: cache)
        }
    }
    return 0
}
