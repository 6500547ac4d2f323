import CCortex
import Cortex

@_cdecl("cx_state_create")
public func cx_state_create(_ model: OpaquePointer?, _ batch: Int64, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_state_create") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let out = try requireOut(out, "out")
        guard batch >= 1, batch <= Int64(1 << 24) else {
            throw CortexError.invalidArgument("batch must be in [1, 16777216], got \(batch)")
        }
        out.pointee = publish(try m.makeState(batch: Int(batch)), .state)
    }
}

@_cdecl("cx_state_free")
public func cx_state_free(_ state: OpaquePointer?) { retire(state, .state) }

@_cdecl("cx_state_clone")
public func cx_state_clone(_ state: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_state_clone") {
        let s = try resolve(state, .state, "state", as: RecurrentState.self)
        let out = try requireOut(out, "out")
        out.pointee = publish(try s.clone(), .state)
    }
}

@_cdecl("cx_state_batch")
public func cx_state_batch(_ state: OpaquePointer?, _ batch: UnsafeMutablePointer<Int64>?) -> Int32 {
    entry("cx_state_batch") {
        let s = try resolve(state, .state, "state", as: RecurrentState.self)
        try requireOut(batch, "batch").pointee = Int64(s.batch)
    }
}

@_cdecl("cx_state_reset")
public func cx_state_reset(_ state: OpaquePointer?, _ mask: UnsafePointer<DLTensor>?) -> Int32 {
    entry("cx_state_reset") {
        let s = try resolve(state, .state, "state", as: RecurrentState.self)
        guard mask != nil else { return try s.reset(rows: nil) }
        let m = try InputTensor(mask, name: "mask", maskAllowed: true)
        guard m.shape.count == 1, m.shape[0] == s.batch else {
            throw CortexError.shapeMismatch("mask: expected (B=\(s.batch)), got \(m.description)")
        }
        var bytes = [UInt8](repeating: 0, count: s.batch)
        bytes.withUnsafeMutableBufferPointer { b in if let p = b.baseAddress { m.readMask(into: p) } }
        try s.reset(rows: bytes.map { $0 != 0 })
    }
}

@_cdecl("cx_state_set_route_ids")
public func cx_state_set_route_ids(_ state: OpaquePointer?, _ ids: UnsafePointer<DLTensor>?) -> Int32 {
    entry("cx_state_set_route_ids") {
        let s = try resolve(state, .state, "state", as: RecurrentState.self)
        guard ids != nil else { return try s.setRouteIDs(nil) }
        let t = try InputTensor(ids, name: "ids", maskAllowed: true)
        guard let values = t.readIntegers() else {
            throw CortexError.dtypeMismatch("ids: dtype \(t.kind.name) is not accepted (an integer dtype: int8…int64, uint8…uint64)")
        }
        guard t.shape.count == 1, t.shape[0] == s.batch else {
            throw CortexError.shapeMismatch("ids: expected (B=\(s.batch)), got \(t.description)")
        }
        try s.setRouteIDs(values)
    }
}

@_cdecl("cx_state_get_route_ids")
public func cx_state_get_route_ids(_ state: OpaquePointer?, _ ids: UnsafeMutablePointer<Int64>?, _ count: Int64,
                                   _ isSet: UnsafeMutablePointer<Int32>?) -> Int32 {
    entry("cx_state_get_route_ids") {
        let s = try resolve(state, .state, "state", as: RecurrentState.self)
        let isSet = try requireOut(isSet, "is_set")
        guard count == Int64(s.batch) else {
            throw CortexError.shapeMismatch("count: expected the batch size \(s.batch), got \(count)")
        }
        let ids = try requireOut(ids, "ids")
        let list = s.routeIDList
        for b in 0..<s.batch { ids[b] = Int64(list?[b] ?? 0) }
        isSet.pointee = list == nil ? 0 : 1
    }
}

@_cdecl("cx_state_get_tensor")
public func cx_state_get_tensor(_ state: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_state_get_tensor") {
        let s = try resolve(state, .state, "state", as: RecurrentState.self)
        let name = try string(path, "path")
        let out = try requireOut(out, "out")
        let t = try s.tensor(named: name)
        out.pointee = publishTensor(t)
    }
}

@_cdecl("cx_state_set_tensor")
public func cx_state_set_tensor(_ state: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ value: UnsafePointer<DLTensor>?) -> Int32 {
    entry("cx_state_set_tensor") {
        let s = try resolve(state, .state, "state", as: RecurrentState.self)
        let name = try string(path, "path")
        let i = try s.index(of: name)
        let v = try InputTensor(value, name: "value")
        let want = s.shape(of: i)
        guard v.shape.array == want else {
            throw CortexError.shapeMismatch("value: '\(name)' is \(shapeText(want)) float32, got \(v.description)")
        }
        try s.write(index: i) { v.readFloats(into: $0) }
    }
}

@_cdecl("cx_state_to_bytes")
public func cx_state_to_bytes(_ state: OpaquePointer?, _ buf: UnsafeMutableRawPointer?, _ cap: Int,
                              _ needed: UnsafeMutablePointer<Int>?) -> Int32 {
    entry("cx_state_to_bytes") {
        let s = try resolve(state, .state, "state", as: RecurrentState.self)
        try copyOut(bytes: try StateCodec.encode(s), buf, cap, try requireOut(needed, "needed"))
    }
}

@_cdecl("cx_state_from_bytes")
public func cx_state_from_bytes(_ model: OpaquePointer?, _ buf: UnsafeRawPointer?, _ len: Int,
                                _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_state_from_bytes") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let out = try requireOut(out, "out")
        let bytes = try inputBytes(buf, len)
        out.pointee = publish(try StateCodec.decode(bytes, model: m), .state)
    }
}

@_cdecl("cx_state_save")
public func cx_state_save(_ state: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> Int32 {
    entry("cx_state_save") {
        let s = try resolve(state, .state, "state", as: RecurrentState.self)
        let p = try string(path, "path")
        try FileIO.writeAtomic(p, try StateCodec.encode(s))
    }
}

@_cdecl("cx_state_load")
public func cx_state_load(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_state_load") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let p = try string(path, "path")
        let out = try requireOut(out, "out")
        out.pointee = publish(try StateCodec.decode(try FileIO.read(p, limit: 1 << 34), model: m), .state)
    }
}
