import CCortex
import Cortex

// OpenMythos through the C ABI: KV caches, logits, generators.

/// Token ids `[B, T]` (any integer dtype) from a DLTensor.
func readIDs(_ p: UnsafePointer<DLTensor>?, _ name: StaticString) throws -> (ids: [Int], batch: Int, time: Int) {
    let t = try InputTensor(p, name: name, maskAllowed: true)
    guard let ids = t.readIntegers() else {
        throw CortexError.dtypeMismatch("\(name): dtype \(t.kind.name) is not accepted (token ids: an integer dtype)")
    }
    guard t.shape.count == 2, t.shape[0] >= 1, t.shape[1] >= 1 else {
        throw CortexError.shapeMismatch("\(name): expected (B, T) token ids with B, T >= 1, got \(t.description)")
    }
    return (ids, t.shape[0], t.shape[1])
}

@_cdecl("cx_cache_create")
public func cx_cache_create(_ model: OpaquePointer?, _ batch: Int64, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_cache_create") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let out = try requireOut(out, "out")
        guard batch >= 1, batch <= 1 << 20 else { throw CortexError.invalidArgument("batch must be in [1, 1048576], got \(batch)") }
        out.pointee = publish(try m.makeCache(batch: Int(batch)), .cache)
    }
}

@_cdecl("cx_cache_fork")
public func cx_cache_fork(_ cache: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?,
                          _ shared: UnsafeMutablePointer<Int64>?) -> Int32 {
    entry("cx_cache_fork") {
        let c = try resolve(cache, .cache, "cache", as: MythosCache.self)
        let out = try requireOut(out, "out")
        let f = try c.fork()
        shared?.pointee = Int64(f.pageCounts.shared)
        out.pointee = publish(f, .cache)
    }
}

@_cdecl("cx_cache_free")
public func cx_cache_free(_ cache: OpaquePointer?) { retire(cache, .cache) }

@_cdecl("cx_cache_info")
public func cx_cache_info(_ cache: OpaquePointer?, _ batch: UnsafeMutablePointer<Int64>?,
                          _ position: UnsafeMutablePointer<Int64>?) -> Int32 {
    entry("cx_cache_info") {
        let c = try resolve(cache, .cache, "cache", as: MythosCache.self)
        batch?.pointee = Int64(c.batch)
        position?.pointee = Int64(c.position)
    }
}

@_cdecl("cx_cache_to_bytes")
public func cx_cache_to_bytes(_ cache: OpaquePointer?, _ buf: UnsafeMutableRawPointer?, _ cap: Int,
                              _ needed: UnsafeMutablePointer<Int>?) -> Int32 {
    entry("cx_cache_to_bytes") {
        let c = try resolve(cache, .cache, "cache", as: MythosCache.self)
        try copyOut(bytes: try MythosCacheCodec.encode(c), buf, cap, try requireOut(needed, "needed"))
    }
}

@_cdecl("cx_cache_from_bytes")
public func cx_cache_from_bytes(_ model: OpaquePointer?, _ buf: UnsafeRawPointer?, _ len: Int,
                                _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_cache_from_bytes") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let out = try requireOut(out, "out")
        out.pointee = publish(try MythosCacheCodec.decode(try inputBytes(buf, len), model: m), .cache)
    }
}

@_cdecl("cx_model_forward_tokens")
public func cx_model_forward_tokens(_ model: OpaquePointer?, _ ids: UnsafePointer<DLTensor>?, _ nLoops: Int32,
                          _ cache: OpaquePointer?, _ startPos: Int64, _ logits: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_model_forward_tokens") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let c = cache == nil ? nil : try resolve(cache, .cache, "cache", as: MythosCache.self)
        let out = try requireOut(logits, "logits")
        _ = try m.requireMythos()
        let x = try readIDs(ids, "ids")
        guard nLoops >= 0 else { throw CortexError.invalidArgument("n_loops must be >= 1 (or 0 for max_loop_iters), got \(nLoops)") }
        guard startPos >= -1 else { throw CortexError.invalidArgument("start_pos must be >= 0 (or -1: the cache's position)") }
        let y = try m.logits(ids: x.ids, batch: x.batch, loops: nLoops == 0 ? nil : Int(nLoops), cache: c,
                             start: startPos < 0 ? nil : Int(startPos))
        out.pointee = publishTensor(y)
    }
}

@_cdecl("cx_generate_default_options")
public func cx_generate_default_options() -> cx_generate_options {
    cx_generate_options(struct_size: UInt32(MemoryLayout<cx_generate_options>.size), n_loops: 0, temperature: 0,
                        top_k: 0, seed: 0, eos_token: -1, reserved: (0, 0, 0, 0))
}

func readGenerateOptions(_ p: UnsafePointer<cx_generate_options>?) throws -> SamplingOptions {
    var o = SamplingOptions()
    let v = try readOptionsStruct(p, defaults: cx_generate_default_options(), what: "generate")
    try requireZero(v.reserved)
    guard v.n_loops >= 0 else { throw CortexError.invalidArgument("options.n_loops must be >= 0 (0: max_loop_iters)") }
    o.loops = v.n_loops == 0 ? nil : Int(v.n_loops)
    o.temperature = v.temperature
    o.topK = Int(v.top_k)
    o.seed = v.seed
    guard v.eos_token >= -1 else { throw CortexError.invalidArgument("options.eos_token must be >= 0 or -1 (none)") }
    o.eosToken = v.eos_token < 0 ? nil : Int(v.eos_token)
    return o
}

@_cdecl("cx_generator_create")
public func cx_generator_create(_ model: OpaquePointer?, _ prompt: UnsafePointer<DLTensor>?,
                                _ opts: UnsafePointer<cx_generate_options>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_generator_create") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let out = try requireOut(out, "out")
        _ = try m.requireMythos()
        let x = try readIDs(prompt, "prompt")
        let gen = try MythosGenerator(model: m, prompt: x.ids, batch: x.batch, options: try readGenerateOptions(opts))
        out.pointee = publish(gen, .generator)
    }
}

@_cdecl("cx_generator_free")
public func cx_generator_free(_ gen: OpaquePointer?) { retire(gen, .generator) }

@_cdecl("cx_generator_next")
public func cx_generator_next(_ gen: OpaquePointer?, _ tokens: UnsafeMutablePointer<Int64>?, _ count: Int64,
                              _ done: UnsafeMutablePointer<Int32>?) -> Int32 {
    entry("cx_generator_next") {
        let g = try resolve(gen, .generator, "generator", as: MythosGenerator.self)
        let tokens = try requireOut(tokens, "tokens"), done = try requireOut(done, "done")
        guard count == Int64(g.batch) else { throw CortexError.shapeMismatch("count: expected the batch size \(g.batch), got \(count)") }
        let next = try g.next()
        for b in 0..<g.batch { tokens[b] = Int64(next[b]) }
        done.pointee = g.done ? 1 : 0
    }
}

@_cdecl("cx_model_generate")
public func cx_model_generate(_ model: OpaquePointer?, _ prompt: UnsafePointer<DLTensor>?, _ maxNew: Int64,
                        _ opts: UnsafePointer<cx_generate_options>?, _ callback: cx_token_callback?,
                        _ user: UnsafeMutableRawPointer?, _ out: UnsafeMutablePointer<Int64>?, _ outCount: Int64,
                        _ generated: UnsafeMutablePointer<Int64>?) -> Int32 {
    entry("cx_model_generate") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let limit = try m.requireMythos().config.maxSeqLen
        let generated = try requireOut(generated, "generated")
        let x = try readIDs(prompt, "prompt")
        // Bounded before any size arithmetic: no sequence outgrows max_seq_len anyway.
        guard maxNew >= 0, maxNew <= Int64(limit) else {
            throw CortexError.invalidArgument("max_new_tokens must be in [0, \(limit)] (max_seq_len), got \(maxNew)")
        }
        let B = x.batch, T = x.time, total = T + Int(maxNew)
        if out != nil || outCount != 0 {
            guard outCount == Int64(B * total) else {
                throw CortexError.shapeMismatch("out: expected \(B) × \(total) = \(B * total) values (B × (T + max_new_tokens)), got \(outCount)")
            }
        }
        let gen = try MythosGenerator(model: m, prompt: x.ids, batch: B, options: try readGenerateOptions(opts))
        var buffer = [Int64](repeating: 0, count: B), step: Int64 = 0
        let steps = try gen.generate(maxNewTokens: Int(maxNew)) { next in
            guard let callback else { return true }
            for b in 0..<B { buffer[b] = Int64(next[b]) }
            defer { step += 1 }
            return buffer.withUnsafeBufferPointer { callback(user, step, $0.baseAddress, Int64(B)) } == 0
        }
        if let out {
            let pad = Int64(gen.options.eosToken ?? 0)
            for b in 0..<B {
                for t in 0..<total {
                    out[b * total + t] = t < T ? Int64(x.ids[b * T + t]) : t - T < steps.count ? Int64(steps[t - T][b]) : pad
                }
            }
        }
        generated.pointee = Int64(steps.count)
    }
}
