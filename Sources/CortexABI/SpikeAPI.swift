import CCortex
import Cortex

// The Perceiver spike decoder through the C ABI.

/// A 1-D integer vector (any integer dtype, strides honoured) from a DLTensor.
func readIntegerVector(_ p: UnsafePointer<DLTensor>?, _ name: StaticString) throws -> [Int] {
    let t = try InputTensor(p, name: name, maskAllowed: true)
    guard let v = t.readIntegers() else {
        throw CortexError.dtypeMismatch("\(name): dtype \(t.kind.name) is not accepted (an integer dtype)")
    }
    guard t.shape.count == 1 else { throw CortexError.shapeMismatch("\(name): expected a 1-D tensor, got \(t.description)") }
    return v
}

@_cdecl("cx_model_decode")
public func cx_model_decode(_ model: OpaquePointer?, _ neuronIDs: UnsafePointer<DLTensor>?, _ timeBins: UnsafePointer<DLTensor>?,
                      _ values: UnsafePointer<DLTensor>?, _ offsets: UnsafePointer<DLTensor>?,
                      _ velocity: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_model_decode") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let out = try requireOut(velocity, "velocity")
        let dec = try m.requireSpikeDecoder(for: "cx_model_decode")
        let y = try dec.decode(neurons: try readIntegerVector(neuronIDs, "neuron_ids"),
                               timeBins: try readIntegerVector(timeBins, "time_bins"),
                               values: try readIntegerVector(values, "values"),
                               offsets: try readIntegerVector(offsets, "offsets"))
        out.pointee = publishTensor(y)
    }
}

@_cdecl("cx_spike_stream_default_options")
public func cx_spike_stream_default_options() -> cx_spike_stream_options {
    cx_spike_stream_options(struct_size: UInt32(MemoryLayout<cx_spike_stream_options>.size), reserved: 0,
                            window_bins: 120, stride_bins: 10, max_window_events: 8192, reserved2: (0, 0, 0, 0))
}

@_cdecl("cx_spike_stream_create")
public func cx_spike_stream_create(_ model: OpaquePointer?, _ opts: UnsafePointer<cx_spike_stream_options>?,
                                 _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_spike_stream_create") {
        let m = try resolve(model, .model, "model", as: Model.self)
        let out = try requireOut(out, "out")
        let dec = try m.requireSpikeDecoder(for: "a spike stream")
        let o = try readOptionsStruct(opts, defaults: cx_spike_stream_default_options(), what: "spike_stream")
        try requireZero(o.reserved); try requireZero(o.reserved2)
        func small(_ v: Int64, _ name: String) throws -> Int {
            guard v >= 1, v <= 1 << 30 else { throw CortexError.invalidArgument("options.\(name) must be in [1, 2^30], got \(v)") }
            return Int(v)
        }
        out.pointee = publish(try SpikeStream(decoder: dec, windowBins: try small(o.window_bins, "window_bins"),
                                              strideBins: try small(o.stride_bins, "stride_bins"),
                                              maxWindowEvents: try small(o.max_window_events, "max_window_events")), .spikeStream)
    }
}

@_cdecl("cx_spike_stream_free")
public func cx_spike_stream_free(_ stream: OpaquePointer?) { retire(stream, .spikeStream) }

@_cdecl("cx_spike_stream_step")
public func cx_spike_stream_step(_ stream: OpaquePointer?, _ neuronIDs: UnsafePointer<DLTensor>?,
                                 _ timeBins: UnsafePointer<DLTensor>?, _ values: UnsafePointer<DLTensor>?,
                                 _ velocity: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    entry("cx_spike_stream_step") {
        let s = try resolve(stream, .spikeStream, "stream", as: SpikeStream.self)
        let out = try requireOut(velocity, "velocity")
        let y = try s.step(neurons: try readIntegerVector(neuronIDs, "neuron_ids"),
                           bins: try readIntegerVector(timeBins, "time_bins"),
                           values: try readIntegerVector(values, "values"))
        out.pointee = publishTensor(y)
    }
}

@_cdecl("cx_spike_stream_reset")
public func cx_spike_stream_reset(_ stream: OpaquePointer?) -> Int32 {
    entry("cx_spike_stream_reset") {
        let s = try resolve(stream, .spikeStream, "stream", as: SpikeStream.self)
        try s.exclusive { s.reset() }
    }
}

@_cdecl("cx_spike_stream_info")
public func cx_spike_stream_info(_ stream: OpaquePointer?, _ bins: UnsafeMutablePointer<Int64>?,
                                 _ events: UnsafeMutablePointer<Int64>?, _ pages: UnsafeMutablePointer<Int64>?,
                                 _ pageBytes: UnsafeMutablePointer<Int64>?) -> Int32 {
    entry("cx_spike_stream_info") {
        let s = try resolve(stream, .spikeStream, "stream", as: SpikeStream.self)
        let v = try s.exclusive { (s.endBin, s.eventsInWindow, s.pagesInUse, s.pageBytes) }
        bins?.pointee = Int64(v.0)
        events?.pointee = Int64(v.1)
        pages?.pointee = Int64(v.2)
        pageBytes?.pointee = Int64(v.3)
    }
}
