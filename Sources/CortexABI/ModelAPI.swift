import CCortex
import Cortex

@_cdecl("cx_model_load")
public func cx_model_load(_ dir: UnsafePointer<CChar>?, _ opts: UnsafePointer<cx_load_options>?,
                          _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_model_load") {
        let path = try string(dir, "dir")
        let o = try readOptions(opts)
        let out = try requireOut(out, "out")
        out.pointee = publish(try Model.load(directory: path, nanPolicy: o.policy, int8: o.int8, checkWeights: o.checkWeights, srht: o.srht), .model)
    }
}

@_cdecl("cx_model_load_from_memory")
public func cx_model_load_from_memory(_ config: UnsafePointer<CChar>?, _ configLen: Int,
                                      _ weights: UnsafeRawPointer?, _ weightsLen: Int,
                                      _ opts: UnsafePointer<cx_load_options>?,
                                      _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_model_load_from_memory") {
        let c = try inputBytes(config.map(UnsafeRawPointer.init), configLen, "config_json")
        let w = weightsLen == 0 ? [] : try inputBytes(weights, weightsLen, "weights")
        let o = try readOptions(opts)
        let out = try requireOut(out, "out")
        out.pointee = publish(try Model(configBytes: c, weightBytes: w, nanPolicy: o.policy, int8: o.int8, checkWeights: o.checkWeights, srht: o.srht), .model)
    }
}

@_cdecl("cx_config_auto_stack")
public func cx_config_auto_stack(_ recipe: UnsafePointer<CChar>?, _ recipeLen: Int, _ buf: UnsafeMutablePointer<CChar>?,
                                 _ cap: Int, _ needed: UnsafeMutablePointer<Int>?) -> Int32 {
    entry("cx_config_auto_stack") {
        guard recipeLen <= Model.maxConfigBytes else { throw CortexError.parse("recipe_json is larger than \(Model.maxConfigBytes) bytes") }
        let bytes = try inputBytes(recipe.map(UnsafeRawPointer.init), recipeLen, "recipe_json")
        let config = try AutoStack.config(recipe: try JSON.parse(bytes))
        let doc = JSON.object([("format", .string("cortex")), ("format_version", .number(Double(Model.formatVersion))),
                               ("architecture", .string("cortex_stack")), ("config", config)])
        try copyOut(doc.serialized, buf, cap, needed)
    }
}

@_cdecl("cx_model_free")
public func cx_model_free(_ model: OpaquePointer?) { retire(model, .model) }

@_cdecl("cx_model_kind")
public func cx_model_kind(_ model: OpaquePointer?, _ kind: UnsafeMutablePointer<Int32>?) -> Int32 {
    entry("cx_model_kind") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let out = try requireOut(kind, "kind")
        let k: cx_kind
        switch m.kind {
        case .stack: k = CX_KIND_STACK
        case .languageModel: k = CX_KIND_LANGUAGE_MODEL
        case .sidecar: k = CX_KIND_SIDECAR
        case .spikeDecoder: k = CX_KIND_SPIKE_DECODER
        }
        out.pointee = Int32(k.rawValue)
    }
}

@_cdecl("cx_model_dims")
public func cx_model_dims(_ model: OpaquePointer?, _ dIn: UnsafeMutablePointer<Int64>?, _ dOut: UnsafeMutablePointer<Int64>?) -> Int32 {
    entry("cx_model_dims") {
        let m = try resolve(model, .model, "model", as: Model.self)
        dIn?.pointee = Int64(m.inputSize)
        dOut?.pointee = Int64(m.outputSize)
    }
}

/// A caller's byte buffer (blobs, configs, recipes): not NULL, `len` >= 0. Copied.
func inputBytes(_ buf: UnsafeRawPointer?, _ len: Int, _ name: String = "buf") throws -> [UInt8] {
    guard let buf else { throw CortexError.invalidArgument("\(name) is NULL") }
    guard len >= 0 else { throw CortexError.invalidArgument("\(name): length \(len) is negative") }
    return Array(UnsafeRawBufferPointer(start: buf, count: len))
}

/// The size-query/copy pattern for bytes: `*needed` always gets the size; copied only
/// when `cap` suffices (else CX_STATUS_BUFFER_TOO_SMALL).
func copyOut(bytes: [UInt8], _ buf: UnsafeMutableRawPointer?, _ cap: Int, _ needed: UnsafeMutablePointer<Int>) throws {
    needed.pointee = bytes.count
    guard let buf, cap >= bytes.count else { throw CortexError.bufferTooSmall(needed: bytes.count) }
    bytes.withUnsafeBytes { src in if let base = src.baseAddress { buf.copyMemory(from: base, byteCount: bytes.count) } }
}

/// The size-query/copy pattern: NUL-terminated text into (buf, cap).
func copyOut(_ text: String, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int, _ needed: UnsafeMutablePointer<Int>?) throws {
    let needed = try requireOut(needed, "needed")
    let bytes = Array(text.utf8) + [0]
    guard let buf, cap >= bytes.count else {
        needed.pointee = bytes.count
        throw CortexError.bufferTooSmall(needed: bytes.count)
    }
    bytes.withUnsafeBufferPointer { src in
        if let base = src.baseAddress { UnsafeMutableRawPointer(buf).copyMemory(from: base, byteCount: bytes.count) }
    }
    needed.pointee = bytes.count
}

@_cdecl("cx_model_info_json")
public func cx_model_info_json(_ model: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                               _ needed: UnsafeMutablePointer<Int>?) -> Int32 {
    entry("cx_model_info_json") {
        let m = try resolve(model, .model, "model", as: Model.self)
        var info = m.info
        if case .object(var pairs) = info {
            pairs.insert(("version", .string(CX_VERSION)), at: 0)
            info = .object(pairs)
        }
        try copyOut(info.serialized, buf, cap, needed)
    }
}

// MARK: compute

/// Where a compute call puts its output.
enum OutputTarget {
    case allocate(UnsafeMutablePointer<OpaquePointer?>?)
    case into(UnsafeMutablePointer<DLTensor>?)
}

/// Shared body of forward/step (allocating or into): validate every argument first,
/// then compute on the state's shadow copy so that a failure changes nothing.
func compute(_ modelP: OpaquePointer?, _ stateP: OpaquePointer?, _ xP: UnsafePointer<DLTensor>?,
             _ resetsP: UnsafePointer<DLTensor>?, step: Bool, output: OutputTarget) throws {
    let model = try resolve(modelP, .model, "model", as: Model.self)
    let state = try resolve(stateP, .state, "state", as: RecurrentState.self)
    guard state.model === model else {
        throw CortexError.stateMismatch("state was created for another model")
    }
    let B = state.batch, D = model.inputSize
    let x = try InputTensor(xP, name: "x")
    let rankOK = x.shape.count == (step ? 2 : 3)
    guard rankOK, x.shape[0] == B, x.shape[x.shape.count - 1] == D else {
        let want = step ? "(B=\(B), D=\(D))" : "(B=\(B), T, D=\(D))"
        throw CortexError.shapeMismatch("x: expected \(want) float32, got \(x.description)")
    }
    let T = step ? 1 : x.shape[1]
    var resets: InputTensor? = nil
    if resetsP != nil {
        let r = try InputTensor(resetsP, name: "resets", maskAllowed: true)
        let perStep = !step && r.shape.count == 2 && r.shape[0] == B && r.shape[1] == T
        let perRow = r.shape.count == 1 && r.shape[0] == B
        guard perStep || perRow else {
            let want = step ? "(B=\(B))" : "(B=\(B), T=\(T)) or (B=\(B))"
            throw CortexError.shapeMismatch("resets: expected \(want), got \(r.description)")
        }
        resets = r
    }
    var yShape = Dims()
    yShape.append(B)
    if !step { yShape.append(T) }
    yShape.append(model.outputSize)
    let yCount = B * T * model.outputSize

    var into: OutputTensor? = nil
    var allocOut: UnsafeMutablePointer<OpaquePointer?>? = nil
    switch output {
    case .allocate(let p): allocOut = try requireOut(p, "y")
    case .into(let p): into = try OutputTensor(p, name: "y", expected: yShape)
    }
    let result: FloatBuffer? = allocOut != nil ? try FloatBuffer(count: yCount) : nil

    try state.exclusive {
        let arena = state.arena
        var xPtr: UnsafePointer<Float>
        if let direct = x.directFloats {
            xPtr = direct
        } else {
            let buf = try arena.take(x.count)
            x.readFloats(into: buf)
            xPtr = UnsafePointer(buf)
        }
        try model.nanPolicy.check(xPtr, count: x.count, name: "x")
        var mask: UnsafeMutablePointer<UInt8>? = nil
        if let resets {
            let raw = UnsafeMutableRawPointer(try arena.take((B * T + 3) / 4))
            let m = raw.bindMemory(to: UInt8.self, capacity: B * T)
            if resets.shape.count == 2 || step {
                resets.readMask(into: m)
            } else {
                // [B] in sequence mode: reset these rows before the first step.
                let rows = UnsafeMutableRawPointer(try arena.take((B + 3) / 4)).bindMemory(to: UInt8.self, capacity: B)
                resets.readMask(into: rows)
                Model.expandRowResets(rows, batch: B, time: T, into: m)
            }
            mask = m
        }
        let y = try result?.pointer ?? arena.take(yCount)
        try state.advance(x: xPtr, batch: B, time: T, resets: mask, into: y)
        if let into { into.write(from: y, count: yCount) }
    }
    if let allocOut, let result {
        allocOut.pointee = publish(TensorHandle(buffer: result, shape: yShape.array), .tensor)
    }
}

@_cdecl("cx_model_forward")
public func cx_model_forward(_ model: OpaquePointer?, _ state: OpaquePointer?, _ x: UnsafePointer<DLTensor>?,
                             _ resets: UnsafePointer<DLTensor>?, _ y: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_model_forward") { try compute(model, state, x, resets, step: false, output: .allocate(y)) }
}

@_cdecl("cx_model_step")
public func cx_model_step(_ model: OpaquePointer?, _ state: OpaquePointer?, _ x: UnsafePointer<DLTensor>?,
                          _ resets: UnsafePointer<DLTensor>?, _ y: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_model_step") { try compute(model, state, x, resets, step: true, output: .allocate(y)) }
}

@_cdecl("cx_model_forward_into")
public func cx_model_forward_into(_ model: OpaquePointer?, _ state: OpaquePointer?, _ x: UnsafePointer<DLTensor>?,
                                  _ resets: UnsafePointer<DLTensor>?, _ y: UnsafeMutablePointer<DLTensor>?) -> Int32 {
    entry("cx_model_forward_into") { try compute(model, state, x, resets, step: false, output: .into(y)) }
}

@_cdecl("cx_model_step_into")
public func cx_model_step_into(_ model: OpaquePointer?, _ state: OpaquePointer?, _ x: UnsafePointer<DLTensor>?,
                               _ resets: UnsafePointer<DLTensor>?, _ y: UnsafeMutablePointer<DLTensor>?) -> Int32 {
    entry("cx_model_step_into") { try compute(model, state, x, resets, step: true, output: .into(y)) }
}
