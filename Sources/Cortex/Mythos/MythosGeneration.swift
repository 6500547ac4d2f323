#if canImport(Glibc)
import Glibc
#endif

/// The language-model API of a loaded OpenMythos model: logits, KV caches, generation.
extension Model {
    public func requireMythos() throws -> MythosModel {
        guard let m = mythos else {
            throw CortexError.unsupported("this is a \(architecture) model; token ids and KV caches need an open_mythos model")
        }
        return m
    }

    /// An empty KV cache for `batch` sequences.
    public func makeCache(batch: Int, pageTokens: Int = KVLayer.defaultPageTokens) throws -> MythosCache {
        try MythosCache(model: self, mythos: try requireMythos(), batch: batch, pageTokens: pageTokens)
    }

    /// Logits `[B, T, V]` (or `[B, V]`, each sequence's last position, when `lastOnly`) for
    /// token ids `[B·T]` (row-major). `loops` defaults to `max_loop_iters` and may exceed
    /// it; `start` (the position of the first token) defaults to the cache's position, or
    /// 0 without a cache. With a cache, the call's keys are appended to it.
    public func logits(ids: [Int], batch B: Int, loops: Int? = nil, cache: MythosCache? = nil, start: Int? = nil,
                       lastOnly: Bool = false) throws -> Tensor {
        let m = try requireMythos(), c = m.config
        guard B >= 1, ids.count % B == 0, ids.count >= B else {
            throw CortexError.shapeMismatch("ids: \(ids.count) values do not form \(B) sequences of at least one token")
        }
        let T = ids.count / B
        let n = loops ?? c.maxLoopIters
        guard n >= 1, n <= 1 << 16 else { throw CortexError.invalidArgument("n_loops must be in [1, 65536], got \(n)") }
        if let bad = ids.firstIndex(where: { $0 < 0 || $0 >= c.vocabSize }) {
            throw CortexError.invalidArgument("ids: token \(ids[bad]) at index \(bad) is outside the vocabulary [0, \(c.vocabSize))")
        }
        if let cache {
            guard cache.model === self else { throw CortexError.stateMismatch("the cache belongs to another model") }
            guard cache.batch == B else {
                throw CortexError.stateMismatch("the cache holds \(cache.batch) sequences, the ids \(B)")
            }
        }
        let s = start ?? cache?.position ?? 0
        guard s >= 0, s + T <= c.maxSeqLen else {
            throw CortexError.invalidArgument("positions \(s)..<\(s + T) exceed max_seq_len \(c.maxSeqLen)")
        }
        let shape = lastOnly ? [B, c.vocabSize] : [B, T, c.vocabSize]
        // Every element is written by the head's product: no need to zero the buffer.
        let out = Tensor(buffer: try FloatBuffer(count: try Checked.count(shape, "logits"), zeroed: false), shape: shape)
        let tokens = ids.map { Int32($0) }
        try tokens.withUnsafeBufferPointer { tp in
            guard let tb = tp.baseAddress else { return }
            if let cache {
                try cache.exclusive {
                    try m.forward(ids: tb, batch: B, time: T, loops: n, start: s, cache: cache, lastOnly: lastOnly,
                                  into: out.data, arena: cache.arena)
                    cache.advance(to: s + T)
                }
            } else {
                let arena = m.borrowArena()
                defer { m.returnArena(arena) }
                try m.forward(ids: tb, batch: B, time: T, loops: n, start: s, cache: nil, lastOnly: lastOnly,
                              into: out.data, arena: arena)
            }
        }
        return out
    }
}

/// Sampling settings for generation.
public struct SamplingOptions: Sendable, Equatable {
    /// Recurrent depth per call (nil: `max_loop_iters`; deeper extrapolates).
    public var loops: Int?
    /// 0: greedy (argmax, the first maximum on ties); else logits are divided by it.
    public var temperature: Float = 0
    /// Keep only logits ≥ the k-th largest (ties kept); 0 or ≥ vocabulary: all.
    public var topK: Int = 0
    public var seed: UInt64 = 0
    /// A sequence that emits this token stops; it then repeats it while others continue.
    public var eosToken: Int?

    public init() {}
}

/// Token-by-token generation for a batch of prompts: the first `next()` runs the prompt
/// through the model (filling the cache), each later one feeds the previous tokens back.
/// Sampling per sequence, in order: greedy when `temperature == 0`; otherwise top-k
/// filtering, softmax of `logits / temperature` (in double), one uniform draw u from the
/// generator's SplitMix64 and the first token whose cumulative probability exceeds u.
public final class MythosGenerator: @unchecked Sendable {
    public let model: Model
    public let cache: MythosCache
    public let options: SamplingOptions
    public let batch: Int
    let promptLength: Int
    var pending: [Int]          // the prompt, then the last tokens
    var rng: SplitMix64
    public private(set) var steps = 0
    public private(set) var finished: [Bool]

    public init(model: Model, prompt: [Int], batch: Int, options: SamplingOptions) throws {
        let m = try model.requireMythos()
        guard batch >= 1, prompt.count % batch == 0, prompt.count >= batch else {
            throw CortexError.shapeMismatch("prompt: \(prompt.count) ids do not form \(batch) non-empty sequences")
        }
        guard options.temperature >= 0, options.temperature.isFinite else {
            throw CortexError.invalidArgument("temperature must be a finite number >= 0")
        }
        guard options.topK >= 0 else { throw CortexError.invalidArgument("top_k must be >= 0") }
        if let l = options.loops, l < 1 { throw CortexError.invalidArgument("n_loops must be >= 1, got \(l)") }
        if let e = options.eosToken, e < 0 || e >= m.config.vocabSize {
            throw CortexError.invalidArgument("eos_token \(e) is outside the vocabulary")
        }
        self.model = model
        self.batch = batch
        self.options = options
        cache = try model.makeCache(batch: batch)
        promptLength = prompt.count / batch
        pending = prompt
        rng = SplitMix64(seed: options.seed)
        finished = [Bool](repeating: false, count: batch)
    }

    /// All sequences have emitted `eos_token`.
    public var done: Bool { finished.allSatisfy { $0 } }

    /// The next token of every sequence (`[B]`).
    public func next() throws -> [Int] {
        let start = steps == 0 ? 0 : promptLength + steps - 1
        let logits = try model.logits(ids: pending, batch: batch, loops: options.loops, cache: cache, start: start,
                                      lastOnly: true)
        let V = logits.shape[1]
        var tokens = [Int](repeating: 0, count: batch)
        for b in 0..<batch {
            if finished[b], let eos = options.eosToken { tokens[b] = eos; continue }
            tokens[b] = sample(logits.data + b * V, V)
            if let eos = options.eosToken, tokens[b] == eos { finished[b] = true }
        }
        pending = tokens
        steps += 1
        return tokens
    }

    /// The generation loop every front end runs: up to `maxNewTokens` steps, stopping
    /// early once every sequence has emitted `eos_token` or `onStep` (given each step's
    /// `[B]` tokens) returns false. Returns the tokens generated per step.
    public func generate(maxNewTokens: Int, onStep: ([Int]) throws -> Bool = { _ in true }) throws -> [[Int]] {
        var steps: [[Int]] = []
        while steps.count < maxNewTokens && !done {
            let tokens = try next()
            steps.append(tokens)
            if try !onStep(tokens) { break }
        }
        return steps
    }

    private func sample(_ l: UnsafePointer<Float>, _ V: Int) -> Int {
        if options.temperature == 0 {
            var best = 0
            for i in 1..<V where l[i] > l[best] { best = i }
            return best
        }
        let t = options.temperature
        var scaled = (0..<V).map { l[$0] / t }
        if options.topK > 0 && options.topK < V {
            let kth = scaled.sorted(by: >)[options.topK - 1]
            for i in 0..<V where scaled[i] < kth { scaled[i] = -.infinity }
        }
        let m = scaled.max() ?? 0
        var probs = scaled.map { Glibc.exp(Double($0 - m)) }
        let total = probs.reduce(0, +)
        for i in 0..<V { probs[i] /= total }
        let u = rng.uniform()
        var acc = 0.0, last = 0
        for i in 0..<V where probs[i] > 0 {
            acc += probs[i]
            last = i
            if acc > u { return i }
        }
        return last
    }
}

